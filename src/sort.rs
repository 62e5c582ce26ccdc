// SPDX-License-Identifier: BSD-2-Clause
//! An in-place sort for the kernel: no recursion, no allocation, a fixed
//! few words of stack whatever the input.
//!
//! `slice::sort_unstable` is a quicksort that recurses (up to about
//! 2·log2(n) levels of a 384-byte frame in the kernel object: some 10 KiB
//! at a batch of 8192 frames), too deep for a NetBSD kernel thread's
//! stack. Heapsort needs O(n log n) comparisons on every input and only a
//! loop. Input already in order, either way, takes one pass (and a
//! reversal): UVM hands out a long free run highest frame first.

/// Sorts `v` ascending, in place (not stable).
pub fn sort<T: Ord>(v: &mut [T]) {
    if v.is_sorted() {
        return;
    }
    if v.is_sorted_by(|a, b| a >= b) {
        v.reverse();
        return;
    }
    let n = v.len();
    // Make v a max-heap: every parent at least as large as its children.
    let mut start = n / 2;
    while start > 0 {
        start -= 1;
        sift_down(v, start, n);
    }
    // Move the largest left in the heap to the end of the sorted tail.
    let mut end = n;
    while end > 1 {
        end -= 1;
        v.swap(0, end);
        sift_down(v, 0, end);
    }
}

/// Restores the heap order of `v[..end]` below `root`.
fn sift_down<T: Ord>(v: &mut [T], mut root: usize, end: usize) {
    // `end <= v.len()`, so every index compared below `end` is in bounds
    // and `2 * root + 2` cannot overflow (a slice holds at most
    // isize::MAX bytes).
    loop {
        let left = 2 * root + 1;
        if left >= end {
            return;
        }
        let right = left + 1;
        let child = if right < end && v.get(left) < v.get(right) {
            right
        } else {
            left
        };
        if v.get(root) >= v.get(child) {
            return;
        }
        v.swap(root, child);
        root = child;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn check(mut v: Vec<u64>) {
        let mut want = v.clone();
        want.sort_unstable();
        sort(&mut v);
        assert_eq!(v, want);
    }

    #[test]
    fn edge_cases() {
        check(Vec::new());
        check(alloc::vec![7]);
        check(alloc::vec![2, 1]);
        check((0..100).collect());
        check((0..100).rev().collect());
        check(alloc::vec![5; 33]);
        check(alloc::vec![9, 9, 7, 7, 7, 3, 0, 0]);
        // Every other frame, descending then ascending: the batch shape
        // record_inflated sees from a fragmented free list.
        check(
            (0..4096)
                .map(|i| if i % 2 == 0 { 10_000 - i } else { i })
                .collect(),
        );
    }

    proptest! {
        #[test]
        fn sorts_like_the_library(v in proptest::collection::vec(0u64..64, 0..300)) {
            check(v);
        }
    }
}
