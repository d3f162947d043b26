//! Tasks and futures: `create_task` (CPython's C `asyncio.Task`, or the task factory's, as the
//! running version's stock loop calls it) and `create_future`.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

use super::state::LoopCore;

/// `asyncio.futures.Future` and `asyncio.tasks.Task` (the C types), looked up once.
static FUTURE_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TASK_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// Names the task a factory made with the stock `asyncio.tasks._set_task_name` of 3.11 and 3.12:
/// a task without `set_name` gets its `DeprecationWarning` and stays unnamed.
#[cfg(not(Py_3_13))]
fn name_task(task: &Bound<'_, PyAny>, name: &Bound<'_, PyAny>) -> PyResult<()> {
    let py = task.py();
    py.import(intern!(py, "asyncio.tasks"))?
        .call_method1(intern!(py, "_set_task_name"), (task, name))
        .map(drop)
}

/// Names the task a factory made, as `create_task` of 3.13 does.
#[cfg(all(Py_3_13, not(Py_3_14)))]
fn name_task(task: &Bound<'_, PyAny>, name: &Bound<'_, PyAny>) -> PyResult<()> {
    task.call_method1(intern!(task.py(), "set_name"), (name,))
        .map(drop)
}

impl LoopCore {
    /// The shared `{"loop": self}` (see `LoopState::loop_kwargs`).
    pub(super) fn loop_kwargs<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyDict>> {
        let py = slf.py();
        if let Some(kwargs) = &slf.get().state.borrow(py).loop_kwargs {
            return Ok(kwargs.bind(py).clone());
        }
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "loop"), slf)?;
        slf.get().state.borrow_mut(py).loop_kwargs = Some(kwargs.clone().unbind());
        Ok(kwargs)
    }

    /// `create_task` through the task factory (see `create_task`). From 3.14 the factory is given
    /// `create_task`'s keywords as they are; before, as the stock loop of those versions, it is
    /// given no `name` (the task is named once made) and no `context` that is None.
    pub(super) fn call_task_factory<'py>(
        slf: &Bound<'py, Self>,
        factory: &Bound<'py, PyAny>,
        coro: Bound<'py, PyAny>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        #[cfg(Py_3_14)]
        {
            factory.call((slf, coro), kwargs.as_ref())
        }
        #[cfg(not(Py_3_14))]
        {
            let py = slf.py();
            let kw = kwargs.unwrap_or_else(|| PyDict::new(py));
            let name = kw.get_item(intern!(py, "name"))?;
            if name.is_some() {
                kw.del_item(intern!(py, "name"))?;
            }
            if kw
                .get_item(intern!(py, "context"))?
                .is_some_and(|c| c.is_none())
            {
                kw.del_item(intern!(py, "context"))?;
            }
            let task = factory.call((slf, coro), Some(&kw))?;
            if let Some(name) = name.filter(|n| !n.is_none()) {
                name_task(&task, &name)?;
            }
            Ok(task)
        }
    }

    /// Wraps a coroutine in a task: CPython's C `asyncio.Task`, or the task factory's, as the
    /// running version's stock loop does. Up to 3.13 a factory is called with `context=` only
    /// when one is given and the task is named afterwards; from 3.14 on every keyword (`name`,
    /// `context`, `eager_start`, ...) goes to the factory, or to `Task`, as given.
    pub(super) fn new_task<'py>(
        slf: &Bound<'py, Self>,
        coro: Bound<'py, PyAny>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let this = slf.get();
        this.check_closed(py)?;
        let kwargs = kwargs.filter(|k| !k.is_empty());
        let factory = this
            .state
            .borrow(py)
            .task_factory
            .as_ref()
            .map(|f| f.clone_ref(py));
        if let Some(factory) = factory {
            return Self::call_task_factory(slf, factory.bind(py), coro, kwargs);
        }
        let kw = match kwargs {
            // `name` and `context` default to None: `loop=` alone is the same call.
            None => LoopCore::loop_kwargs(slf)?,
            Some(kw) => {
                kw.set_item(intern!(py, "loop"), slf)?;
                kw
            }
        };
        let task = TASK_TYPE
            .import(py, "asyncio.tasks", "Task")?
            .call((coro,), Some(&kw))?;
        if this.shared.debug() {
            // As the stock loop: the source traceback ends at the caller, not here.
            let source = task.getattr(intern!(py, "_source_traceback"))?;
            if source.is_truthy()? {
                source.del_item(-1)?;
            }
        }
        Ok(task)
    }

    /// `asyncio.Future(loop=self)`.
    pub(crate) fn new_future<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kwargs = LoopCore::loop_kwargs(slf)?;
        FUTURE_TYPE
            .import(py, "asyncio.futures", "Future")?
            .call((), Some(&kwargs))
    }
}
