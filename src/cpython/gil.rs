//! `GilCell` and `GilSlot`: mutable state inside a frozen `#[pyclass]`, guarded by the GIL, or,
//! on a free-threaded build, by the lock that stands in for it (`thread_lock.rs`).
//!
//! PyO3 requires pyclasses to be `Sync`, because Python may hand the object to any thread. The
//! loop's state is touched from the loop's thread and, for the cross-thread entry points
//! (`call_soon_threadsafe`, `stop`, `close`, a call made from the wrong thread), from others.
//! With the GIL, a `Python<'_>` token proves the thread is alone, so a `RefCell` behind the token
//! is enough, and the `RefCell` flag turns re-entrancy (a Python callback calling back into the
//! loop while a borrow is live) into an error instead of aliasing. Without the GIL
//! (`Py_GIL_DISABLED`), each cell also holds an `OwnerLock` for the length of a borrow: one
//! uncontended compare-and-swap on the loop's own thread, a short wait on another.
//!
//! The rules that keep this sound, which every user of a `GilCell` follows:
//! - never keep a borrow across a call into Python code (that code may re-enter, or wait for
//!   another thread that waits for this cell), and
//! - never keep a borrow across `Python::detach` (another thread may then take the GIL, or, on a
//!   free-threaded build, would wait for the lock all that time).
//!
//! A loop and what it owns belong to the thread that runs it; the locks make any other thread's
//! access safe, not fast.

use std::cell::{Ref, RefCell, RefMut};

use pyo3::Python;

pub struct GilCell<T> {
    cell: RefCell<T>,
    #[cfg(Py_GIL_DISABLED)]
    lock: crate::cpython::thread_lock::OwnerLock,
}

// SAFETY: with the GIL, the inner RefCell is reached only through methods that take a `Python`
// token (the GIL is held) or from the collector's traverse (which runs with the GIL held);
// without it, only while its `OwnerLock` is held. So no two threads touch it at once; see the
// module doc for the rules on borrows.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T: Default> Default for GilCell<T> {
    fn default() -> Self {
        GilCell::new(T::default())
    }
}

#[cfg(not(Py_GIL_DISABLED))]
mod with_gil {
    use super::*;

    impl<T> GilCell<T> {
        pub fn new(value: T) -> Self {
            GilCell {
                cell: RefCell::new(value),
            }
        }

        /// Borrows mutably; panics if a borrow is live, which the module rules exclude.
        #[inline(always)]
        pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> RefMut<'a, T> {
            self.cell.borrow_mut()
        }

        /// Borrows mutably unless a borrow is live: for code that a finalizer may run while one
        /// is.
        pub fn try_borrow_mut<'a>(&'a self, _py: Python<'_>) -> Option<RefMut<'a, T>> {
            self.cell.try_borrow_mut().ok()
        }

        #[inline(always)]
        pub fn borrow<'a>(&'a self, _py: Python<'_>) -> Ref<'a, T> {
            self.cell.borrow()
        }

        /// For `__traverse__`, which gets no `Python` token but runs with the GIL held. Returns
        /// `None` while a borrow is live; reporting fewer references only keeps objects alive
        /// longer.
        pub fn try_borrow_in_gc(&self) -> Option<Ref<'_, T>> {
            self.cell.try_borrow().ok()
        }
    }
}

#[cfg(Py_GIL_DISABLED)]
mod free_threaded {
    use std::mem::ManuallyDrop;
    use std::ops::{Deref, DerefMut};

    use super::*;
    use crate::cpython::thread_lock::OwnerLock;

    /// A shared borrow, holding the cell's lock until dropped.
    pub struct CellRef<'a, T> {
        value: ManuallyDrop<Ref<'a, T>>,
        lock: &'a OwnerLock,
    }

    /// A mutable borrow, holding the cell's lock until dropped.
    pub struct CellRefMut<'a, T> {
        value: ManuallyDrop<RefMut<'a, T>>,
        lock: &'a OwnerLock,
    }

    impl<T> Deref for CellRef<'_, T> {
        type Target = T;
        #[inline(always)]
        fn deref(&self) -> &T {
            &self.value
        }
    }

    impl<T> Deref for CellRefMut<'_, T> {
        type Target = T;
        #[inline(always)]
        fn deref(&self) -> &T {
            &self.value
        }
    }

    impl<T> DerefMut for CellRefMut<'_, T> {
        #[inline(always)]
        fn deref_mut(&mut self) -> &mut T {
            &mut self.value
        }
    }

    impl<T> Drop for CellRef<'_, T> {
        #[inline(always)]
        fn drop(&mut self) {
            // SAFETY: dropped once, here; the borrow ends before the lock is let go.
            unsafe { ManuallyDrop::drop(&mut self.value) };
            // SAFETY: this thread took the lock when the borrow was made.
            unsafe { self.lock.release() };
        }
    }

    impl<T> Drop for CellRefMut<'_, T> {
        #[inline(always)]
        fn drop(&mut self) {
            // SAFETY: as for `CellRef`.
            unsafe { ManuallyDrop::drop(&mut self.value) };
            // SAFETY: as for `CellRef`.
            unsafe { self.lock.release() };
        }
    }

    impl<T> GilCell<T> {
        pub fn new(value: T) -> Self {
            GilCell {
                cell: RefCell::new(value),
                lock: OwnerLock::new(),
            }
        }

        /// Runs `borrow` on the cell with its lock held; the lock is let go if it fails.
        #[inline(always)]
        fn locked<'a, B>(
            &'a self,
            borrow: impl FnOnce(&'a RefCell<T>) -> Option<B>,
        ) -> Option<(B, &'a OwnerLock)> {
            match borrow(&self.cell) {
                Some(b) => Some((b, &self.lock)),
                None => {
                    // SAFETY: the caller took the lock just before.
                    unsafe { self.lock.release() };
                    None
                }
            }
        }

        /// Borrows mutably; panics if a borrow is live, which the module rules exclude.
        #[inline(always)]
        pub fn borrow_mut<'a>(&'a self, py: Python<'_>) -> CellRefMut<'a, T> {
            self.lock.acquire(py);
            let Some((value, lock)) = self.locked(|c| c.try_borrow_mut().ok()) else {
                panic!("GilCell already borrowed");
            };
            CellRefMut {
                value: ManuallyDrop::new(value),
                lock,
            }
        }

        /// Borrows mutably unless a borrow is live on this thread: for code that a finalizer
        /// may run while one is.
        pub fn try_borrow_mut<'a>(&'a self, py: Python<'_>) -> Option<CellRefMut<'a, T>> {
            self.lock.acquire(py);
            let (value, lock) = self.locked(|c| c.try_borrow_mut().ok())?;
            Some(CellRefMut {
                value: ManuallyDrop::new(value),
                lock,
            })
        }

        #[inline(always)]
        pub fn borrow<'a>(&'a self, py: Python<'_>) -> CellRef<'a, T> {
            self.lock.acquire(py);
            let Some((value, lock)) = self.locked(|c| c.try_borrow().ok()) else {
                panic!("GilCell already mutably borrowed");
            };
            CellRef {
                value: ManuallyDrop::new(value),
                lock,
            }
        }

        /// For `__traverse__`: `None` if another thread holds the lock or a mutable borrow is
        /// live; reporting fewer references only keeps objects alive longer.
        pub fn try_borrow_in_gc(&self) -> Option<CellRef<'_, T>> {
            if !self.lock.try_acquire() {
                return None;
            }
            let (value, lock) = self.locked(|c| c.try_borrow().ok())?;
            Some(CellRef {
                value: ManuallyDrop::new(value),
                lock,
            })
        }
    }
}

/// A value with no borrow flag, for what millions of objects hold (a flag each would cost a
/// word per handle): a handle's callback and Context, the loop's hot counters.
///
/// Sound because every access is short and runs no Python code while it holds the reference
/// (not even a decref that could free an object with a `__del__`: values are taken out and
/// dropped after), so no two accesses on one thread can overlap, not even re-entrantly; and
/// accesses from different threads are excluded by the GIL (the token) or, on a free-threaded
/// build, by a spin lock held for the access. `with` is `unsafe` for that first condition, which
/// its callers check.
pub struct GilSlot<T> {
    value: std::cell::UnsafeCell<T>,
    #[cfg(Py_GIL_DISABLED)]
    lock: crate::cpython::thread_lock::SpinLock,
}

// SAFETY: see the type's doc: never two accesses at once.
unsafe impl<T: Send> Sync for GilSlot<T> {}

impl<T> GilSlot<T> {
    pub const fn new(value: T) -> Self {
        GilSlot {
            value: std::cell::UnsafeCell::new(value),
            #[cfg(Py_GIL_DISABLED)]
            lock: crate::cpython::thread_lock::SpinLock::new(),
        }
    }

    /// Runs `f` on the value.
    ///
    /// # Safety
    /// `f` runs no Python code and nothing that could wait, such as a lock or a collection (an
    /// incref is fine; see the type's doc).
    #[inline(always)]
    pub unsafe fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        #[cfg(Py_GIL_DISABLED)]
        let _held = self.lock.acquire();
        // SAFETY: the GIL (the token) or the lock excludes other threads and, per the contract,
        // nothing else on this thread can access the value until `f` returns.
        f(unsafe { &mut *self.value.get() })
    }

    /// Reads the value from the collector's traverse, which starts only where Python code
    /// could run, so never during a `with` on its own thread. `None` where another thread is in
    /// a `with` (free-threaded builds; traverse then reports fewer references).
    pub fn in_gc<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        #[cfg(Py_GIL_DISABLED)]
        let _held = self.lock.try_acquire()?;
        // SAFETY: see above: no `with` is under way, and traverse only reads.
        Some(f(unsafe { &*self.value.get() }))
    }
}
