#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod backend;
mod config;
mod keys;
mod list;
mod node;
mod round;

pub use backend::Redis;
pub use config::RedisConfig;
