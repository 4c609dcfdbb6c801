//! A profile in its Automerge document: reconciling a profile into it (so an import becomes the
//! minimal change), reading it back, and changing one service.

use automerge::transaction::Transactable;
use automerge::{AutoCommit, ObjType, ReadDoc, ScalarValue};
use serde_json::Value;
use time::Date;

use super::{Capacity, MapError, Profile, invalid};
use crate::keys;

fn scalar(v: &Value) -> Option<ScalarValue> {
    match v {
        Value::String(s) => Some(ScalarValue::Str(s.as_str().into())),
        Value::Bool(b) => Some(ScalarValue::Boolean(*b)),
        Value::Number(n) => n
            .as_i64()
            .map(ScalarValue::Int)
            .or_else(|| n.as_f64().map(ScalarValue::F64)),
        _ => None,
    }
}

fn same_scalar(
    current: Option<(automerge::Value<'_>, automerge::ObjId)>,
    new: &ScalarValue,
) -> bool {
    match current {
        Some((automerge::Value::Scalar(s), _)) => s.as_ref() == new,
        _ => false,
    }
}

/// Makes the map object `obj` hold exactly `value` (a JSON object), changing only what differs:
/// scalars that changed are set, keys that are gone are deleted, nested maps recurse, lists
/// that changed are rewritten.
fn reconcile_map(
    doc: &mut AutoCommit,
    obj: &automerge::ObjId,
    value: &serde_json::Map<String, Value>,
) -> Result<(), automerge::AutomergeError> {
    let existing: Vec<String> = doc.keys(obj).collect();
    for key in existing {
        if !value.contains_key(&key) {
            doc.delete(obj, key.as_str())?;
        }
    }
    for (key, v) in value {
        match v {
            Value::Object(inner) => {
                let child = match doc.get(obj, key.as_str())? {
                    Some((automerge::Value::Object(ObjType::Map), id)) => id,
                    _ => doc.put_object(obj, key.as_str(), ObjType::Map)?,
                };
                reconcile_map(doc, &child, inner)?;
            }
            Value::Array(items) => {
                let unchanged = match doc.get(obj, key.as_str())? {
                    Some((automerge::Value::Object(ObjType::List), id)) => {
                        list_equals(doc, &id, items)
                    }
                    _ => false,
                };
                if !unchanged {
                    let list = doc.put_object(obj, key.as_str(), ObjType::List)?;
                    for (i, item) in items.iter().enumerate() {
                        match item {
                            Value::Object(inner) => {
                                let child = doc.insert_object(&list, i, ObjType::Map)?;
                                reconcile_map(doc, &child, inner)?;
                            }
                            other => {
                                if let Some(s) = scalar(other) {
                                    doc.insert(&list, i, s)?;
                                }
                            }
                        }
                    }
                }
            }
            Value::Null => {
                doc.delete(obj, key.as_str())?;
            }
            other => {
                if let Some(s) = scalar(other)
                    && !same_scalar(doc.get(obj, key.as_str())?, &s)
                {
                    doc.put(obj, key.as_str(), s)?;
                }
            }
        }
    }
    Ok(())
}

fn list_equals(doc: &AutoCommit, list: &automerge::ObjId, items: &[Value]) -> bool {
    if doc.length(list) != items.len() {
        return false;
    }
    let current = read_value(doc, list, ObjType::List);
    current == Value::Array(items.to_vec())
}

/// Reads an object of the document as JSON.
fn read_value(doc: &AutoCommit, obj: &automerge::ObjId, kind: ObjType) -> Value {
    match kind {
        ObjType::Map | ObjType::Table => {
            let mut out = serde_json::Map::new();
            for key in doc.keys(obj) {
                if let Ok(Some((v, id))) = doc.get(obj, key.as_str()) {
                    out.insert(key.clone(), read_item(doc, v, &id));
                }
            }
            Value::Object(out)
        }
        ObjType::List | ObjType::Text => {
            let mut out = Vec::new();
            for i in 0..doc.length(obj) {
                if let Ok(Some((v, id))) = doc.get(obj, i) {
                    out.push(read_item(doc, v, &id));
                }
            }
            Value::Array(out)
        }
    }
}

fn read_item(doc: &AutoCommit, v: automerge::Value<'_>, id: &automerge::ObjId) -> Value {
    match v {
        automerge::Value::Object(kind) => read_value(doc, id, kind),
        automerge::Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(s) => Value::String(s.to_string()),
            ScalarValue::Int(i) => Value::from(*i),
            ScalarValue::Uint(u) => Value::from(*u),
            ScalarValue::F64(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
            ScalarValue::Boolean(b) => Value::Bool(*b),
            _ => Value::Null,
        },
    }
}

/// Sets the document to hold `profile`, as one change (or none if nothing differs). Returns the
/// change's bytes.
pub fn import(doc: &mut AutoCommit, profile: &Profile) -> Result<Option<Vec<u8>>, MapError> {
    let value = serde_json::to_value(profile)
        .map_err(|e| MapError::Document(profile.org.clone(), e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(MapError::Document(
            profile.org.clone(),
            "not an object".into(),
        ));
    };
    // Services are kept as a map keyed by id, so concurrent edits of two services merge.
    let mut root = map.clone();
    if let Some(Value::Array(services)) = map.get("services") {
        let keyed: serde_json::Map<String, Value> = services
            .iter()
            .filter_map(|s| Some((s.get("id")?.as_str()?.to_string(), s.clone())))
            .collect();
        root.insert("services".into(), Value::Object(keyed));
    }
    reconcile_map(doc, &automerge::ROOT, &root)
        .map_err(|e| MapError::Document(profile.org.clone(), e.to_string()))?;
    if doc.pending_ops() == 0 {
        return Ok(None);
    }
    doc.commit();
    Ok(doc.get_last_local_change().map(|c| c.raw_bytes().to_vec()))
}

/// Reads a profile back from its document (tolerant: what does not fit is left out).
pub fn read(doc: &AutoCommit) -> Option<Profile> {
    let mut root = read_value(doc, &automerge::ROOT, ObjType::Map);
    if let Some(Value::Object(services)) = root.get("services").cloned() {
        let mut list: Vec<Value> = services.into_values().collect();
        list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        root["services"] = Value::Array(list);
    }
    serde_json::from_value(root).ok()
}

/// Changes one service's capacity, and optionally marks it verified on `today`; one change.
pub fn update_service(
    doc: &mut AutoCommit,
    service: &str,
    capacity: Option<Capacity>,
    verified: Option<Date>,
) -> Result<Option<Vec<u8>>, MapError> {
    let err = |e: automerge::AutomergeError| MapError::Document(service.to_string(), e.to_string());
    let services = match doc.get(automerge::ROOT, "services").map_err(err)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => {
            return Err(invalid(
                "service",
                format!("no service `{service}` in this profile"),
            ));
        }
    };
    let obj = match doc.get(&services, service).map_err(err)? {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => {
            return Err(invalid(
                "service",
                format!(
                    "no service `{}` in this profile",
                    keys::truncate_for_error(service)
                ),
            ));
        }
    };
    if let Some(c) = capacity {
        doc.put(&obj, "capacity", c.as_str()).map_err(err)?;
    }
    if let Some(d) = verified {
        doc.put(&obj, "verified", d.to_string()).map_err(err)?;
    }
    if doc.pending_ops() == 0 {
        return Ok(None);
    }
    doc.commit();
    Ok(doc.get_last_local_change().map(|c| c.raw_bytes().to_vec()))
}
