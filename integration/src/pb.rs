//! Generated clients for the example plugins and the zoo.

pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.v1.rs"));
    /// The echo plugin's contract as an encoded `FileDescriptorSet`.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/echo.binpb"));
}

pub mod token {
    include!(concat!(env!("OUT_DIR"), "/token.v1.rs"));
    /// The token validator's contract as an encoded `FileDescriptorSet`.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/token.binpb"));
}

pub mod zoo {
    include!(concat!(env!("OUT_DIR"), "/zoo.v1.rs"));
    /// The zoo's contract as an encoded `FileDescriptorSet`.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/zoo.binpb"));
}
