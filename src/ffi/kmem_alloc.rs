//! A global allocator over `kmem_alloc(9)` / `kmem_free(9)`.
//!
//! kmem(9) guarantees only 8-byte alignment (REFERENCE.md §5), and
//! `kmem_free` needs the size it was given. Requests that need no more
//! alignment go straight through; larger alignments over-allocate, place
//! the object on the aligned address and keep the raw pointer in the word
//! just below it.
//!
//! The shim allocates with KM_NOSLEEP (glue.h), so NULL is an answer
//! this allocator passes on: the core allocates only fallibly
//! (`try_reserve*`, a hand-made `Box` at attach), and a NULL becomes
//! ENOMEM, never `handle_alloc_error`.

use balloon_sys::{balloon_shim_kmem_alloc, balloon_shim_kmem_free};
use core::alloc::{GlobalAlloc, Layout};
use cty::c_void;

/// Alignment kmem(9) gives every allocation.
const KMEM_ALIGN: usize = 8;
/// Room for the saved raw pointer below an over-aligned object.
const HEADER: usize = core::mem::size_of::<usize>();

struct KmemAllocator;

#[global_allocator]
static ALLOCATOR: KmemAllocator = KmemAllocator;

/// Bytes to ask kmem for so that an object of `layout` fits at an
/// address aligned to `layout.align()` with a header word below it.
fn padded_size(layout: Layout) -> Option<usize> {
    layout
        .size()
        .checked_add(layout.align())?
        .checked_add(HEADER)
}

// SAFETY: every pointer returned is either NULL or a block of at least
// `layout.size()` bytes aligned to `layout.align()`, and `dealloc`
// reverses exactly what `alloc` did for the same layout.
unsafe impl GlobalAlloc for KmemAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size().max(1);
        if layout.align() <= KMEM_ALIGN {
            // SAFETY: size is non-zero; the shim returns NULL or a block
            // of `size` bytes with 8-byte alignment.
            return unsafe { balloon_shim_kmem_alloc(size) }.cast();
        }
        let Some(total) = padded_size(layout) else {
            return core::ptr::null_mut();
        };
        // SAFETY: total is non-zero.
        let raw = unsafe { balloon_shim_kmem_alloc(total) }.cast::<u8>();
        if raw.is_null() {
            return raw;
        }
        let first = raw as usize + HEADER;
        let aligned = (first + layout.align() - 1) & !(layout.align() - 1);
        let obj = raw.wrapping_add(aligned - raw as usize);
        // SAFETY: obj - HEADER >= raw and obj + size <= raw + total, so
        // the header word lies inside the block; it is 8-aligned since
        // obj is aligned to more than 8 and HEADER is 8.
        unsafe { obj.sub(HEADER).cast::<usize>().write(raw as usize) };
        obj
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let size = layout.size().max(1);
        if layout.align() <= KMEM_ALIGN {
            // SAFETY: ptr came from `alloc` with this layout, i.e. from
            // kmem with exactly `size` bytes.
            unsafe { balloon_shim_kmem_free(ptr.cast(), size) };
            return;
        }
        let Some(total) = padded_size(layout) else {
            return;
        };
        // SAFETY: `alloc` stored the raw block pointer in the word below
        // the object for every over-aligned layout.
        let raw = unsafe { ptr.sub(HEADER).cast::<usize>().read() } as *mut c_void;
        // SAFETY: raw is the block `alloc` got from kmem with `total` bytes.
        unsafe { balloon_shim_kmem_free(raw, total) };
    }
}
