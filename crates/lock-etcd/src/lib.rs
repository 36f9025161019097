#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod keys;
mod leases;
mod store;
mod subscribe;

pub use config::EtcdConfig;
pub use leases::LeaseMode;
pub use store::Etcd;
