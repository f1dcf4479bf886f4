//! Generated clients for the example plugins and the zoo.

pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/echo.v1.rs"));
}

pub mod token {
    include!(concat!(env!("OUT_DIR"), "/token.v1.rs"));
}

pub mod zoo {
    include!(concat!(env!("OUT_DIR"), "/zoo.v1.rs"));
}
