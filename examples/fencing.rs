//! Fencing tokens: why a lock alone cannot protect a resource, and how the token does.
//!
//! Holder A takes the lock with a short TTL, then pauses (a GC pause, a stopped VM) past it.
//! The lease expires, B acquires with a larger token and writes. When A wakes up it still
//! believes it holds the lock and writes too, but the register rejects A's stale token.

use lock::provider::Memory;
use lock::{FencingToken, Locker};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

/// A storage register that accepts a write only with a token at least as large as every token
/// it has seen.
#[derive(Default)]
struct FencedRegister {
    state: StdMutex<(Option<FencingToken>, String)>,
}

impl FencedRegister {
    fn write(&self, token: FencingToken, value: &str) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        if let Some(highest) = state.0
            && token < highest
        {
            return Err(format!(
                "rejected: token {token} is older than {highest}, already seen"
            ));
        }
        *state = (Some(token), value.to_owned());
        Ok(())
    }

    fn read(&self) -> String {
        self.state.lock().unwrap().1.clone()
    }
}

#[tokio::main]
async fn main() -> lock::Result<()> {
    let store = Memory::new();
    let a = Locker::from(Locker::builder(store.clone()).owner("client-a").build()?);
    let b = Locker::from(Locker::builder(store).owner("client-b").build()?);
    let register = Arc::new(FencedRegister::default());
    let name = "account-42";

    let guard_a = a.mutex(name).ttl(Duration::from_millis(300)).lock().await?;
    let token_a = guard_a.token();
    println!("A acquired {name:?} with token {token_a} and a 300ms TTL");
    println!("A pauses for 600ms (think: a long GC pause), past its TTL ...");

    let client_b = tokio::spawn({
        let register = Arc::clone(&register);
        async move {
            let guard_b = b.mutex(name).lock().await?;
            println!(
                "B acquired {name:?} after A's lease expired, with token {}",
                guard_b.token()
            );
            match register.write(guard_b.token(), "written by B") {
                Ok(()) => println!("B wrote with token {}: accepted", guard_b.token()),
                Err(e) => println!("B's write {e}"),
            }
            guard_b.release().await
        }
    });

    tokio::time::sleep(Duration::from_millis(600)).await;
    client_b.await.expect("client B")?;

    println!("A wakes up and writes with its old token {token_a}");
    match register.write(token_a, "written by A") {
        Ok(()) => println!("A's late write was accepted: the data is corrupted!"),
        Err(e) => println!("A's late write was {e}"),
    }
    println!("register holds: {:?}", register.read());

    match guard_a.release().await {
        Ok(()) => println!("A released"),
        Err(e) => println!("A's release reports: {e}"),
    }
    Ok(())
}
