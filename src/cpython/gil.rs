//! `GilCell`: mutable state inside a frozen `#[pyclass]`, guarded by the GIL.
//!
//! PyO3 requires pyclasses to be `Sync`, because Python may hand the object to any thread. The
//! loop's state is touched from the loop's thread and, for `call_soon_threadsafe`, from others;
//! but always with the GIL held, which is what a `Python<'_>` token proves. So a `RefCell` behind
//! the token is enough: the GIL excludes other threads, and the `RefCell` flag turns re-entrancy
//! (a Python callback calling back into the loop while a borrow is live) into an error instead
//! of aliasing.
//!
//! The rules that keep this sound, which every user of a `GilCell` follows:
//! - never keep a borrow across a call into Python code (that code may re-enter), and
//! - never keep a borrow across `Python::detach` (another thread may then take the GIL).
//!
//! Not for free-threaded ("no-GIL") Python builds, which ferroloop does not support.

use std::cell::{Ref, RefCell, RefMut};

use pyo3::Python;

pub struct GilCell<T>(RefCell<T>);

// SAFETY: the inner RefCell is reached only through methods that take a `Python` token (the GIL
// is held) or from the garbage collector's traverse slot (which runs with the GIL held), so no
// two threads touch it at once; see the module doc for the rules on borrows.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T: Default> Default for GilCell<T> {
    fn default() -> Self {
        GilCell::new(T::default())
    }
}

impl<T> GilCell<T> {
    pub fn new(value: T) -> Self {
        GilCell(RefCell::new(value))
    }

    /// Borrows mutably; panics if a borrow is live, which the module rules exclude.
    pub fn borrow_mut<'a>(&'a self, _py: Python<'_>) -> RefMut<'a, T> {
        self.0.borrow_mut()
    }

    /// Borrows mutably unless a borrow is live: for code that a finalizer may run while one is.
    pub fn try_borrow_mut<'a>(&'a self, _py: Python<'_>) -> Option<RefMut<'a, T>> {
        self.0.try_borrow_mut().ok()
    }

    pub fn borrow<'a>(&'a self, _py: Python<'_>) -> Ref<'a, T> {
        self.0.borrow()
    }

    /// For `__traverse__`, which gets no `Python` token but runs with the GIL held. Returns
    /// `None` while a borrow is live; reporting fewer references only keeps objects alive longer.
    pub fn try_borrow_in_gc(&self) -> Option<Ref<'_, T>> {
        self.0.try_borrow().ok()
    }
}

/// A value guarded by the GIL with no borrow flag, for what millions of objects hold (a flag
/// each would cost a word per handle): a handle's callback and Context, the handle free lists.
///
/// Sound because every access is short and runs no Python code while it holds the reference
/// (not even a decref that could free an object with a `__del__`: values are taken out and
/// dropped after), so no two accesses can overlap, not even re-entrantly; and only a thread
/// holding the GIL accesses it. `with` is `unsafe` for that first condition, which its callers
/// check; the second is the token.
pub struct GilSlot<T>(std::cell::UnsafeCell<T>);

// SAFETY: see the type's doc: accessed only with the GIL held, never by two accesses at once.
unsafe impl<T: Send> Sync for GilSlot<T> {}

impl<T> GilSlot<T> {
    pub const fn new(value: T) -> Self {
        GilSlot(std::cell::UnsafeCell::new(value))
    }

    /// Runs `f` on the value.
    ///
    /// # Safety
    /// `f` runs no Python code (see the type's doc).
    #[inline(always)]
    pub unsafe fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: the GIL is held (the token) and, per the contract, nothing else can access the
        // value until `f` returns.
        f(unsafe { &mut *self.0.get() })
    }

    /// Reads the value from the collector's traverse, which holds the GIL and starts only where
    /// Python code could run, so never during a `with`.
    pub fn in_gc<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        // SAFETY: see above: no `with` is under way, and traverse only reads.
        f(unsafe { &*self.0.get() })
    }
}
