//! The builder methods every lock handle shares.

/// Adds the option builder methods to a handle type with a `core: HandleCore` field.
macro_rules! handle_options {
    ($handle:ident) => {
        impl $handle {
            /// The lock's name.
            pub fn name(&self) -> &str {
                &self.core.name
            }

            /// Sets the lease time to live (default: the locker's, 30 s unless configured).
            /// Must be > 0: acquisitions report [`Error::InvalidArgument`](crate::Error) otherwise.
            pub fn ttl(mut self, ttl: std::time::Duration) -> Self {
                self.core.options.ttl = Some(ttl);
                self
            }

            /// Keeps each lease alive in the background until it is released (default off).
            /// See [`Guard`](crate::Guard) for how a lease is declared lost.
            pub fn auto_extend(mut self, on: bool) -> Self {
                self.core.options.auto_extend = on;
                self
            }

            /// Sets the auto-extension period (default: the locker's, at most a third of the
            /// TTL). Must be > 0 and below the TTL.
            pub fn extend_interval(mut self, interval: std::time::Duration) -> Self {
                self.core.options.extend_interval = Some(interval);
                self
            }

            /// Adds a key/value pair stored with each lease and shown by inspection.
            pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
                self.core.options.metadata.insert(key.into(), value.into());
                self.core.metadata = std::sync::Arc::new(self.core.options.metadata.clone());
                self
            }

            /// Sets the retry policy (default: the locker's).
            pub fn retry(mut self, retry: crate::RetryPolicy) -> Self {
                self.core.options.retry = Some(retry);
                self
            }

            /// Runs `callback` once when a guard of this handle is declared lost.
            pub fn on_lost(
                mut self,
                callback: impl Fn(&crate::LockInfo) + Send + Sync + 'static,
            ) -> Self {
                self.core.options.on_lost = Some(std::sync::Arc::new(callback));
                self
            }

            /// Makes blocking acquisitions give up after `timeout` with
            /// [`Error::NotAcquired`](crate::Error::NotAcquired) (default: wait until granted
            /// or cancelled).
            pub fn lock_timeout(mut self, timeout: std::time::Duration) -> Self {
                self.core.options.wait_timeout = Some(timeout);
                self
            }

            /// The handle's options.
            pub fn options(&self) -> &crate::LockOptions {
                &self.core.options
            }
        }

        impl std::fmt::Debug for $handle {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($handle))
                    .field("name", &self.core.name)
                    .field("options", &self.core.options)
                    .finish()
            }
        }
    };
}

pub(crate) use handle_options;
