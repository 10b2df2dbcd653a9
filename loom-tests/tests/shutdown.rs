//! loom model of the shutdown handshake: once `drained` resolves, every admitted request has
//! finished, and no request is admitted after shutdown began.
#![cfg(cuenv_loom)]

use cuenv::gate::WorkGate;
use loom::future::block_on;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

#[test]
fn drained_waits_for_admitted_work_and_admits_nothing_after() {
    loom::model(|| {
        let gate = WorkGate::default();
        // 1 = admitted and running, 2 = finished (its write is on disk).
        let progress = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (gate, progress) = (gate.clone(), Arc::clone(&progress));
            thread::spawn(move || {
                if let Some(pass) = gate.enter() {
                    progress.store(1, Ordering::SeqCst);
                    // The spawned half of a request shares the pass.
                    let spawned = pass.share();
                    drop(pass);
                    progress.store(2, Ordering::SeqCst);
                    drop(spawned);
                }
            })
        };
        block_on(gate.drained());
        let seen = progress.load(Ordering::SeqCst);
        assert!(
            seen == 0 || seen == 2,
            "shutdown finished while admitted work was running ({seen})"
        );
        assert!(gate.enter().is_none(), "work admitted after shutdown");
        worker.join().unwrap();
        assert_eq!(gate.active(), 0);
    });
}
