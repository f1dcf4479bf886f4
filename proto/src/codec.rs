//! The gRPC codec of the supervisor's own contracts (the plugin protocol, the
//! host channel's log stream, the control API): prost's, with decode and encode
//! buffers that start small. Every plugin instance keeps a log stream open to
//! the daemon for its whole life, and tonic gives each stream an 8 KiB buffer
//! from the start, where a log record is a few hundred bytes; the buffers grow
//! as a larger message needs.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// What a stream's buffers start at, with tonic's default yield threshold.
fn small() -> BufferSettings {
    BufferSettings::new(512, 32 * 1024)
}

/// prost's codec, its buffers starting at [`small`]'s sizes.
#[derive(Debug, Clone, Copy)]
pub struct SmallCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        SmallCodec(PhantomData)
    }
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(small())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(small())
    }
}
