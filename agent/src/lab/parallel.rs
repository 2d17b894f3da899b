//! Running independent jobs (pod creations, probes) at once, a bounded number at a time.
use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Mutex,
};

/// `work` applied to every item, on at most `bound` threads; results in item order.
pub fn map<T: Sync, R: Send>(items: &[T], bound: usize, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..bound.clamp(1, items.len().max(1)) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else { break };
                let result = work(item);
                results.lock().expect("no worker panics while holding it")[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .expect("workers ended")
        .into_iter()
        .map(|r| r.expect("every item was worked on"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_runs_each_item_once() {
        let items: Vec<u32> = (0..50).collect();
        let calls = AtomicUsize::new(0);
        let doubled = map(&items, 7, |n| {
            calls.fetch_add(1, Ordering::Relaxed);
            n * 2
        });
        assert_eq!(doubled, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(calls.into_inner(), 50);
        assert!(map(&[] as &[u32], 4, |n| *n).is_empty());
    }
}
