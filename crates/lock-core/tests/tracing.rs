//! Spans on acquire, extend and release carry backend, kind, name and token (feature `tracing`).

use lock_core::Locker;
use lock_memory::Memory;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::fmt::format::FmtSpan;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn spans_carry_backend_kind_name_and_token() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let locker = Locker::with_backend(Memory::new());
                let guard = locker.mutex("orders/42").lock().await.unwrap();
                guard.extend(Duration::from_secs(5)).await.unwrap();
                guard.release().await.unwrap();
            });
    });
    let output = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    for span in ["lock.acquire", "lock.extend", "lock.release"] {
        let line = output
            .lines()
            .find(|line| line.contains(span))
            .unwrap_or_else(|| panic!("no {span} span in:\n{output}"));
        for field in [
            "backend=\"memory\"",
            "kind=mutex",
            "name=\"orders/42\"",
            "token=1",
        ] {
            assert!(line.contains(field), "{span} lacks {field}: {line}");
        }
    }
}
