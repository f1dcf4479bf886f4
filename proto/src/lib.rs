//! The supervisor's gRPC contracts: the plugin lifecycle, the host callbacks
//! plugins make, and the control API `supervisorctl` speaks.

/// Lifecycle service the plugin serves (handshake, init, shutdown).
pub mod plugin {
    pub mod v1 {
        tonic::include_proto!("plugin.v1");
    }
}

/// Host service the supervisor serves to each plugin.
pub mod host {
    pub mod v1 {
        tonic::include_proto!("plugin.host.v1");
    }
}

/// Control API of the daemon.
pub mod control {
    pub mod v1 {
        tonic::include_proto!("supervisor.v1");
    }
}

pub mod codec;
pub mod declared;
pub mod launch;
mod message_ends;
pub mod panics;
pub mod signals;
mod small_frames;
pub mod socket;
pub mod spin;
pub mod transport;

#[cfg(feature = "build")]
pub mod build;

/// The protocol versions this release of the contracts defines. A major
/// version changes only with an incompatible change to the lifecycle.
pub const PROTOCOL_VERSION: u32 = 1;

/// The SDK versions a supervisor of this release works with: a plugin's
/// `HandshakeResponse.sdk_version` must match (semver requirement syntax).
/// The supervisor and the SDK's test harness check the same range.
pub const SUPPORTED_SDK: &str = ">=0.1.0, <1.0.0";

/// Encoded `FileDescriptorSet` of the contracts above.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.binpb"));
