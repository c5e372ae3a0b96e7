//! JSON values to Python objects and back.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use crate::errors::Failure;

/// A JSON value as `dict`, `list`, `str`, `int`, `float`, `bool` or `None`.
pub fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(flag) => PyBool::new(py, *flag).to_owned().into_any(),
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                int.into_pyobject(py)?.into_any()
            } else if let Some(int) = number.as_u64() {
                int.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, number.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(text) => PyString::new(py, text).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(entries) => {
            let dict = PyDict::new(py);
            for (key, item) in entries {
                dict.set_item(key, to_python(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// A Python object built from JSON types as a JSON value; `where_` names it in errors.
pub fn from_python(object: &Bound<'_, PyAny>, where_: &str) -> Result<Value, Failure> {
    if object.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(flag) = object.cast::<PyBool>() {
        return Ok(Value::Bool(flag.is_true()));
    }
    if object.is_instance_of::<PyInt>() {
        if let Ok(int) = object.extract::<i64>() {
            return Ok(Value::from(int));
        }
        if let Ok(int) = object.extract::<u64>() {
            return Ok(Value::from(int));
        }
        return Err(Failure::invalid(format!(
            "{where_} is an integer too large for JSON"
        )));
    }
    if let Ok(float) = object.cast::<PyFloat>() {
        return Number::from_f64(float.value())
            .map(Value::Number)
            .ok_or_else(|| Failure::invalid(format!("{where_} is not a finite number")));
    }
    if let Ok(text) = object.cast::<PyString>() {
        return text
            .to_str()
            .map(|text| Value::String(text.to_owned()))
            .map_err(|error| Failure::invalid(format!("{where_} is not valid text: {error}")));
    }
    if let Ok(dict) = object.cast::<PyDict>() {
        let mut map = Map::new();
        for (key, item) in dict.iter() {
            let key: String = key.extract().map_err(|_| {
                Failure::invalid(format!("{where_} has a key that is not a string"))
            })?;
            let value = from_python(&item, &format!("{where_}.{key}"))?;
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if object.is_instance_of::<PyList>() || object.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (index, item) in object
            .try_iter()
            .map_err(|error| Failure::invalid(format!("{where_} cannot be read: {error}")))?
            .enumerate()
        {
            let item = item.map_err(|error| Failure::invalid(format!("{where_}: {error}")))?;
            items.push(from_python(&item, &format!("{where_}[{index}]"))?);
        }
        return Ok(Value::Array(items));
    }
    let type_name = object
        .get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "?".into());
    Err(Failure::invalid(format!(
        "{where_} is a {type_name}, which JSON cannot represent"
    )))
}
