#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod keys;
mod store;
mod subscribe;

pub use config::EtcdConfig;
pub use store::Etcd;
