//! `protocol.data_received` (and a buffered protocol's `get_buffer` and `buffer_updated`) found
//! without a lookup at each read, when CPython's own bookkeeping shows that the lookup would find
//! the same function.
//!
//! The stock transport calls `self._protocol.data_received(data)`: an attribute lookup at each
//! read, so a method replaced later on the protocol or its class takes effect at the next read
//! (tests/test_method_lookup.py). That lookup (`_PyObject_GetMethod`: the type's method cache,
//! then the instance's attributes) cost some 230 instructions per read (callgrind), an eighth
//! of a 1 KiB Protocol echo. The cache keeps the function one lookup found and checks, at each
//! read, what decides the next lookup, the way the interpreter's own specialised `LOAD_METHOD`
//! does:
//! - The class: the object's type is the same type at the same version tag. CPython gives a
//!   type a new tag whenever the type or any of its bases changes (`PyType_Modified`, which also
//!   covers a new `__getattribute__`) and never hands a tag out twice.
//! - The instance, which could shadow the function with an attribute of the same name:
//!   - attributes stored inline ("values", the usual case): the name has no slot in the type's
//!     shared keys and those keys gained none since (they only ever grow), or it has a slot and
//!     this instance's value there is empty;
//!   - attributes in a real `__dict__`: the same dict at the same version (PEP 509: any change
//!     gives a dict a new version from one global counter; 3.14 dropped versions), or one
//!     lookup in it that finds no such entry;
//!   - no `__dict__` at all (`__slots__`): nothing to check.
//!
//! Only a plain Python function found on the class is cached: a non-data descriptor, so only an
//! instance attribute can shadow it, and calling it with the protocol first is exactly what the
//! bound method does. Types with their own attribute lookup, a `__dict__` at an offset of their
//! own (subclasses of some C types), or anything on the class other than a function (a
//! `staticmethod`, a callable object, a property) are looked up at every read.
//!
//! The layouts read here are private and differ between versions (`Include/internal/
//! pycore_object.h` and `pycore_dict.h`); what differs is in `layout`, one module per version,
//! chosen at build time:
//! - 3.11: inline values and the `__dict__` in the two words before the GC header; a type's tag
//!   is valid while `Py_TPFLAGS_VALID_VERSION_TAG` is set; dicts have versions (PEP 509).
//! - 3.13 and 3.14 (and 3.15): inline values after the object (at `sizeof(PyObject)` on 3.13, at
//!   the type's basic size from 3.14), valid while their `valid` byte is set; the `__dict__` three
//!   words before the object; a tag is valid while non-zero. 3.13 dicts have versions; 3.14 dicts
//!   have none, so a `__dict__` is searched at every read (a scan of a few `str` keys).
//! - 3.12 (a fourth layout, tagged dict-or-values pointer) is not tested on this machine, and
//!   free-threaded builds read these structures under locks: there, and under
//!   `FERROLOOP_LAYOUT_READS=0`, every read looks the method up.

use std::ffi::c_uint;
use std::ptr;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyType};

use crate::cpython::gil::GilCell;

extern "C" {
    // The lookup along the MRO that attribute access itself uses: a borrowed reference or
    // NULL, never an exception. Exported by CPython 3.
    fn _PyType_Lookup(ty: *mut ffi::PyTypeObject, name: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// `PyDictKeysObject`'s header (the same from 3.11 to 3.15); the hash indices, then the entries,
/// follow it.
#[repr(C)]
struct DictKeys {
    _dk_refcnt: ffi::Py_ssize_t,
    _dk_log2_size: u8,
    dk_log2_index_bytes: u8,
    dk_kind: u8,
    _dk_version: u32,
    _dk_usable: ffi::Py_ssize_t,
    dk_nentries: ffi::Py_ssize_t,
}

/// `PyDictObject` (the same fields from 3.11 to 3.15; the version word is a watcher tag from 3.14
/// on, and what `ma_values` points to differs: `layout::values_array`).
#[repr(C)]
struct DictHead {
    _ob_base: ffi::PyObject,
    _ma_used: ffi::Py_ssize_t,
    ma_version_tag: u64,
    ma_keys: *const DictKeys,
    /// A split dict's values (its keys are a class's shared keys); NULL for a combined one.
    ma_values: *mut std::ffi::c_void,
}

/// Where an instance keeps its attributes, for a type with managed storage. (Only `Empty` is
/// made where the trick is off: 3.12 and the free-threaded builds.)
#[cfg_attr(
    not(any(all(Py_3_11, not(Py_3_12)), all(Py_3_13, not(Py_GIL_DISABLED)))),
    allow(dead_code)
)]
enum Storage {
    /// Inline, in this values array, indexed as the type's shared keys.
    Inline(*mut *mut ffi::PyObject),
    /// In this `__dict__`.
    Dict(*mut ffi::PyObject),
    /// Nowhere yet.
    Empty,
}

/// What differs between versions (see the module doc). Every function reads a live object's
/// memory: the GIL is held and the pointers are live, per each `# Safety`.
#[cfg(all(Py_3_11, not(Py_3_12)))]
mod layout {
    use crate::cpython::method_cache::Storage;
    use pyo3::ffi;

    pub const SUPPORTED: bool = true;

    /// # Safety
    /// `tp` is a live type.
    pub unsafe fn has_tag(tp: *mut ffi::PyTypeObject, version: std::ffi::c_uint) -> bool {
        // SAFETY: per the contract; plain fields are read.
        unsafe {
            (*tp).tp_flags & ffi::Py_TPFLAGS_VALID_VERSION_TAG != 0
                && (*tp).tp_version_tag == version
        }
    }

    /// # Safety
    /// `object` is live, of a type with `Py_TPFLAGS_MANAGED_DICT`.
    pub unsafe fn storage(object: *mut ffi::PyObject) -> Storage {
        // SAFETY: on 3.11 the four words before such an object are its inline values, its
        // dict, and its GC links.
        let (values, dict) = unsafe {
            (
                *object.cast::<*mut *mut ffi::PyObject>().sub(4),
                *object.cast::<*mut ffi::PyObject>().sub(3),
            )
        };
        if !values.is_null() {
            Storage::Inline(values)
        } else if !dict.is_null() {
            Storage::Dict(dict)
        } else {
            Storage::Empty
        }
    }

    /// A split dict's values array (3.11: `ma_values` is the array itself).
    pub fn values_array(ma_values: *mut std::ffi::c_void) -> *mut *mut ffi::PyObject {
        ma_values.cast()
    }

    /// The dict's version, which changes at every change of the dict (PEP 509).
    pub fn version(tag: u64) -> Option<u64> {
        Some(tag)
    }
}

#[cfg(all(Py_3_13, not(Py_GIL_DISABLED)))]
mod layout {
    use crate::cpython::method_cache::Storage;
    use pyo3::ffi;

    pub const SUPPORTED: bool = true;

    /// `Py_TPFLAGS_INLINE_VALUES` (3.13+).
    const INLINE_VALUES: std::ffi::c_ulong = 1 << 2;

    /// `PyDictValues`' header before its array (3.13+).
    #[repr(C)]
    struct ValuesHead {
        _capacity: u8,
        _size: u8,
        _embedded: u8,
        valid: u8,
    }

    /// # Safety
    /// `tp` is a live type.
    pub unsafe fn has_tag(tp: *mut ffi::PyTypeObject, version: std::ffi::c_uint) -> bool {
        // SAFETY: per the contract; a plain field is read. From 3.13 a tag is valid while
        // non-zero (the flag is no longer set).
        unsafe { version != 0 && (*tp).tp_version_tag == version }
    }

    /// Where inline values start: after the object header on 3.13, after the type's basic size
    /// from 3.14.
    ///
    /// # Safety
    /// `object` is live, of a type with `Py_TPFLAGS_INLINE_VALUES`.
    unsafe fn inline_values(object: *mut ffi::PyObject) -> *mut ValuesHead {
        #[cfg(not(Py_3_14))]
        let offset = std::mem::size_of::<ffi::PyObject>();
        // SAFETY: reading the basic size of the object's live type.
        #[cfg(Py_3_14)]
        let offset = unsafe { (*ffi::Py_TYPE(object)).tp_basicsize } as usize;
        // SAFETY: per the contract, the values lie at `offset` inside the object's allocation.
        unsafe { object.cast::<u8>().add(offset).cast() }
    }

    /// # Safety
    /// `object` is live, of a type with `Py_TPFLAGS_MANAGED_DICT`.
    pub unsafe fn storage(object: *mut ffi::PyObject) -> Storage {
        // SAFETY: reading the flags of the object's live type.
        let flags = unsafe { (*ffi::Py_TYPE(object)).tp_flags };
        if flags & INLINE_VALUES != 0 {
            // SAFETY: the type has inline values (checked), so the header is there.
            let values = unsafe { inline_values(object) };
            // SAFETY: as above.
            if unsafe { (*values).valid } != 0 {
                return Storage::Inline(values_array(values.cast()));
            }
        }
        // SAFETY: with a managed dict, the dict pointer is three words before the object.
        let dict = unsafe { *object.cast::<*mut ffi::PyObject>().sub(3) };
        if dict.is_null() {
            Storage::Empty
        } else {
            Storage::Dict(dict)
        }
    }

    /// A `PyDictValues`' array, after its 8-byte header (3.13+).
    pub fn values_array(ma_values: *mut std::ffi::c_void) -> *mut *mut ffi::PyObject {
        ma_values
            .cast::<u8>()
            .wrapping_add(std::mem::size_of::<usize>())
            .cast()
    }

    /// The dict's version: 3.13's changes at every change of the dict; 3.14's word is only a
    /// watcher tag, so there is none.
    pub fn version(tag: u64) -> Option<u64> {
        if cfg!(Py_3_14) {
            None
        } else {
            Some(tag)
        }
    }
}

#[cfg(not(any(all(Py_3_11, not(Py_3_12)), all(Py_3_13, not(Py_GIL_DISABLED)))))]
mod layout {
    use crate::cpython::method_cache::Storage;
    use pyo3::ffi;

    pub const SUPPORTED: bool = false;

    /// # Safety
    /// Never called (`SUPPORTED` is false).
    pub unsafe fn has_tag(_tp: *mut ffi::PyTypeObject, _version: std::ffi::c_uint) -> bool {
        false
    }

    /// # Safety
    /// Never called (`SUPPORTED` is false).
    pub unsafe fn storage(_object: *mut ffi::PyObject) -> Storage {
        Storage::Empty
    }

    pub fn values_array(ma_values: *mut std::ffi::c_void) -> *mut *mut ffi::PyObject {
        ma_values.cast()
    }

    pub fn version(_tag: u64) -> Option<u64> {
        None
    }
}

/// `DICT_KEYS_GENERAL`: keys of any type, compared through their own `__eq__`.
const DICT_KEYS_GENERAL: u8 = 0;

/// A dict with more entries than this is searched by CPython's own lookup, not by a scan.
const SCAN_AT_MOST: ffi::Py_ssize_t = 32;

/// Where the name stands in a type's shared keys.
#[derive(Clone, Copy)]
enum KeySlot {
    /// Not among the keys, which numbered this many.
    Absent(ffi::Py_ssize_t),
    /// At this index: an instance has the attribute if its inline value there is set.
    At(usize),
}

/// What a lookup found, and the state it was found in.
struct Entry {
    /// Held so that the type cannot be freed and another made at its address.
    ty: Py<PyType>,
    version: c_uint,
    function: Py<PyAny>,
    /// Whether instances keep attributes in 3.11's managed storage (else they have none).
    managed: bool,
    /// The address of the type's shared keys and the name's place in them, when last checked
    /// (only compared: the keys are read through the type).
    keys: Option<(usize, KeySlot)>,
    /// The address and version of the instance's `__dict__` when it was last seen without the
    /// name. Versions come from one counter and a new dict takes a new one, so a dict made
    /// later at the same address cannot match.
    dict: Option<(usize, u64)>,
}

/// What a check of an entry against the protocol found.
enum Verdict {
    /// The lookup would find the entry's function.
    Holds,
    /// The instance has an attribute of that name: the lookup finds it.
    Shadowed,
    /// The cache cannot tell (an instance `__dict__` with keys other than `str`): look up.
    Unknown,
    /// The class is another or has changed: look up afresh.
    Stale,
}

/// One method name's cache for one transport's protocol.
#[derive(Default)]
pub struct MethodCache {
    entry: Option<Entry>,
}

impl MethodCache {
    fn visit(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        if let Some(entry) = &self.entry {
            visit.call(&entry.ty)?;
            visit.call(&entry.function)?;
        }
        Ok(())
    }

    /// The function to call, if the entry holds for `obj`; runs no Python code.
    fn holding<'py>(
        &mut self,
        obj: &Bound<'py, PyAny>,
        name: &Bound<'py, PyString>,
    ) -> Result<Option<Bound<'py, PyAny>>, ()> {
        match self
            .entry
            .as_mut()
            .map_or(Verdict::Stale, |e| e.check(obj, name))
        {
            Verdict::Holds => Ok(self
                .entry
                .as_ref()
                .map(|e| e.function.bind(obj.py()).clone())),
            Verdict::Shadowed | Verdict::Unknown => Ok(None),
            Verdict::Stale => Err(()),
        }
    }
}

/// The methods a transport calls on its protocol at each read, each with its own cache.
#[derive(Default)]
pub struct ReadMethods {
    pub data_received: GilCell<MethodCache>,
    pub get_buffer: GilCell<MethodCache>,
    pub buffer_updated: GilCell<MethodCache>,
}

impl ReadMethods {
    fn cells(&self) -> [&GilCell<MethodCache>; 3] {
        [&self.data_received, &self.get_buffer, &self.buffer_updated]
    }

    /// Empties every cache (a new protocol, or none); what they held is dropped after each
    /// cell is let go, since dropping may run Python code.
    pub fn forget(&self, py: Python<'_>) {
        for cell in self.cells() {
            let old = std::mem::take(&mut *cell.borrow_mut(py));
            drop(old);
        }
    }

    pub fn visit(&self, visit: &pyo3::gc::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        for cell in self.cells() {
            if let Some(cache) = cell.try_borrow_in_gc() {
                cache.visit(visit)?;
            }
        }
        Ok(())
    }
}

/// Calls `obj.<name>(arg)`: the cached function when the cache vouches for it, else through a
/// lookup. Checking runs no Python code (only `str` keys are compared), so the cell stays
/// borrowed for it; a new lookup, which may (a class dict can hold keys of any type), runs
/// with the cell let go.
///
/// Inlined into each of its three callers: as a function of its own, its prologue and the
/// moves of its arguments cost some 20 instructions per read (callgrind, Protocol echo).
#[inline(always)]
pub fn call_method1<'py>(
    cell: &GilCell<MethodCache>,
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    arg: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let function = if enabled(py) {
        let checked = cell.borrow_mut(py).holding(obj, name);
        match checked {
            Ok(function) => function,
            Err(()) => {
                let fresh = Entry::find(obj, name);
                let stale = std::mem::replace(&mut cell.borrow_mut(py).entry, fresh);
                drop(stale);
                cell.borrow_mut(py).holding(obj, name).ok().flatten()
            }
        }
    } else {
        None
    };
    let Some(function) = function else {
        return obj.call_method1(name, (arg,));
    };
    let args = [obj.as_ptr(), arg.as_ptr()];
    let f = function.as_ptr();
    // SAFETY: `function` is a live Python function (the cache keeps nothing else) and `args`
    // two live borrowed references for the duration of the call; the result is a new reference
    // or NULL with an exception set. The function's own vectorcall entry (found through the
    // public `PyVectorcall_Function`) is what `PyObject_Vectorcall` would call; called here,
    // that function's frame is one fewer to return through after the protocol's write (see
    // `core::sys`).
    unsafe {
        let result = match ffi::PyVectorcall_Function(f) {
            Some(vectorcall) => vectorcall(f, args.as_ptr(), 2, ptr::null_mut()),
            None => ffi::PyObject_Vectorcall(f, args.as_ptr(), 2, ptr::null_mut()),
        };
        Bound::from_owned_ptr_or_err(py, result)
    }
}

impl Entry {
    /// A first lookup: the function `obj.<name>` binds on its class, if the cache may keep it
    /// (whether the instance shadows it is `check`'s part).
    fn find(obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> Option<Entry> {
        let py = obj.py();
        let ty = obj.get_type();
        let tp = ty.as_type_ptr();
        // SAFETY: `tp` is the live type of a live object; plain fields are read.
        let (getattro, flags, version, dictoffset) = unsafe {
            (
                (*tp).tp_getattro,
                ffi::PyType_GetFlags(tp),
                (*tp).tp_version_tag,
                (*tp).tp_dictoffset,
            )
        };
        let managed = flags & ffi::Py_TPFLAGS_MANAGED_DICT != 0;
        if !is_generic(getattro)
            || (managed && flags & ffi::Py_TPFLAGS_HEAPTYPE == 0)
            || (!managed && dictoffset != 0)
        {
            return None;
        }
        // SAFETY: `tp` and `name` are live; the result is borrowed from the type's MRO dicts
        // and becomes a strong reference at once.
        let found = unsafe { _PyType_Lookup(tp, name.as_ptr()) };
        // SAFETY: `found` is NULL or a live object.
        if found.is_null() || unsafe { ffi::PyFunction_Check(found) } == 0 {
            return None;
        }
        // SAFETY: live and borrowed (above); taken as a new reference.
        let function = unsafe { Bound::from_borrowed_ptr(py, found) }.unbind();
        // The lookup may have run code (a class dict's odd key): the tag must be the one read.
        // SAFETY: as above.
        unsafe { layout::has_tag(tp, version) }.then(|| Entry {
            ty: ty.unbind(),
            version,
            function,
            managed,
            keys: None,
            dict: None,
        })
    }

    /// Whether the lookup of `name` on `obj` would find this entry's function (module doc).
    fn check(&mut self, obj: &Bound<'_, PyAny>, name: &Bound<'_, PyString>) -> Verdict {
        let tp = self.ty.as_ptr().cast::<ffi::PyTypeObject>();
        let object = obj.as_ptr();
        // SAFETY: `object` is live and `tp` kept alive by the entry.
        let same_class = unsafe { ffi::Py_TYPE(object) == tp && layout::has_tag(tp, self.version) };
        if !same_class {
            return Verdict::Stale;
        }
        if !self.managed {
            return Verdict::Holds;
        }
        // SAFETY: the type has Py_TPFLAGS_MANAGED_DICT (`managed`) and `layout` is this build's.
        match unsafe { layout::storage(object) } {
            Storage::Inline(values) => self.check_inline(tp.cast(), values, name),
            Storage::Dict(dict) => self.check_dict(dict, name),
            Storage::Empty => Verdict::Holds,
        }
    }

    /// The instance keeps its attributes inline: is the name among them?
    fn check_inline(
        &mut self,
        tp: *mut ffi::PyHeapTypeObject,
        values: *mut *mut ffi::PyObject,
        name: &Bound<'_, PyString>,
    ) -> Verdict {
        // SAFETY: a heap type with managed dicts has its shared keys (3.11's layout), alive as
        // long as the type.
        let keys = unsafe { (*tp).ht_cached_keys }
            .cast::<DictKeys>()
            .cast_const();
        // SAFETY: `keys` is live; shared keys are of a `str` kind, checked before they are read.
        if unsafe { (*keys).dk_kind } == DICT_KEYS_GENERAL {
            return Verdict::Unknown;
        }
        let slot = match self.keys {
            // SAFETY: `keys` is live.
            Some((seen, KeySlot::Absent(n)))
                if seen == keys as usize && unsafe { (*keys).dk_nentries } == n =>
            {
                KeySlot::Absent(n)
            }
            Some((seen, KeySlot::At(ix))) if seen == keys as usize => KeySlot::At(ix),
            _ => {
                // SAFETY: `keys` is a type's live shared keys, whose keys are all exact `str`s.
                let (found, count) = unsafe { (find_key(keys, name), (*keys).dk_nentries) };
                found.map_or(KeySlot::Absent(count), KeySlot::At)
            }
        };
        self.keys = Some((keys as usize, slot));
        match slot {
            // SAFETY: `ix` is below the keys' entry count, which the values array covers.
            KeySlot::At(ix) if unsafe { !(*values.add(ix)).is_null() } => Verdict::Shadowed,
            _ => Verdict::Holds,
        }
    }

    /// The instance has a `__dict__`: does it hold the name?
    fn check_dict(&mut self, dict: *mut ffi::PyObject, name: &Bound<'_, PyString>) -> Verdict {
        // SAFETY: `dict` is live (the object holds it); its layout is read only once it is known
        // to be exactly a dict, on 3.11.
        unsafe {
            if ffi::PyDict_CheckExact(dict) == 0 {
                return Verdict::Unknown;
            }
            let head = dict.cast::<DictHead>();
            let seen = layout::version((*head).ma_version_tag).map(|v| (dict as usize, v));
            if seen.is_some() && self.dict == seen {
                return Verdict::Holds;
            }
            // Keys of any type would be compared through their `__eq__`: Python code, which a
            // check must not run. With only `str` keys the lookup compares strings, and it
            // cannot fail (the name's hash is cached).
            if (*(*head).ma_keys).dk_kind == DICT_KEYS_GENERAL {
                return Verdict::Unknown;
            }
            let keys = (*head).ma_keys;
            let found = if (*keys).dk_nentries > SCAN_AT_MOST {
                !ffi::PyDict_GetItemWithError(dict, name.as_ptr()).is_null()
            } else {
                match find_key(keys, name) {
                    None => false,
                    // A split dict's value is in its values array; a combined one's in the entry.
                    Some(ix) if !(*head).ma_values.is_null() => {
                        !(*layout::values_array((*head).ma_values).add(ix)).is_null()
                    }
                    Some(ix) => !(*entries(keys).add(ix))[1].is_null(),
                }
            };
            if found {
                return Verdict::Shadowed;
            }
            self.dict = seen;
        }
        Verdict::Holds
    }
}

/// The (key, value) entries of 3.11 keys of a `str` kind: after the header and the hash
/// indices.
///
/// # Safety
/// `keys` points to live 3.11 dict keys whose kind is not `DICT_KEYS_GENERAL`.
unsafe fn entries(keys: *const DictKeys) -> *const [*mut ffi::PyObject; 2] {
    // SAFETY: per the contract.
    unsafe {
        keys.cast::<u8>()
            .add(std::mem::size_of::<DictKeys>() + (1usize << (*keys).dk_log2_index_bytes))
            .cast()
    }
}

/// The index of the entry whose key equals `name` in `keys`, if any. Keys of a `str` kind hold
/// only exact `str`s, each hashed when it was inserted; an equal one has the same cached hash,
/// and comparing two `str`s runs no Python code.
///
/// # Safety
/// `keys` points to live 3.11 dict keys whose kind is not `DICT_KEYS_GENERAL`.
unsafe fn find_key(keys: *const DictKeys, name: &Bound<'_, PyString>) -> Option<usize> {
    let name = name.as_ptr();
    // SAFETY: per the contract: `dk_nentries` entries follow, each key NULL (deleted) or a live
    // exact `str`, whose `PyASCIIObject` header holds its cached hash.
    unsafe {
        // The name's hash, cached in it once computed (computing a `str`'s runs no Python code).
        let cached = (*name.cast::<ffi::PyASCIIObject>()).hash;
        let hash = if cached == -1 {
            ffi::PyObject_Hash(name)
        } else {
            cached
        };
        let entries = entries(keys);
        (0..usize::try_from((*keys).dk_nentries).unwrap_or(0)).find(|&ix| {
            let key = (*entries.add(ix))[0];
            key == name
                || (!key.is_null()
                    && (*key.cast::<ffi::PyASCIIObject>()).hash == hash
                    && ffi::PyUnicode_Compare(key, name) == 0)
        })
    }
}

/// Whether a type's attribute lookup is the generic one (no `__getattribute__`/`__getattr__`).
/// `PyObject_GenericGetAttr` is a symbol of the interpreter, so it has one address.
fn is_generic(getattro: Option<ffi::getattrofunc>) -> bool {
    getattro
        .is_some_and(|f| std::ptr::fn_addr_eq(f, ffi::PyObject_GenericGetAttr as ffi::getattrofunc))
}

/// Whether the cache is used: built for a CPython whose layouts `layout` knows (module doc), and
/// layout reads not turned off (`FERROLOOP_LAYOUT_READS=0`).
pub fn enabled(_py: Python<'_>) -> bool {
    layout::SUPPORTED && super::switch::layout_reads_allowed()
}
