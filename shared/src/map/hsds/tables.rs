//! The tabular form of HSDS 3.0, read from the specification's own `datapackage.json` (shipped
//! unchanged in `hsds/`): which tables exist, their file names and their columns, in order. An
//! export writes every table the package names (a table we have nothing for is a header only)
//! and the package itself beside them, so `frictionless validate` checks our files against the
//! standard's definition, not a copy of it.

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// The specification's Data Package, unchanged (HSDS 3.0, Open Referral, CC BY-SA 4.0).
pub const DATAPACKAGE: &str = include_str!("../../../../hsds/spec/datapackage.json");

/// One table of the package: its resource name (`service`), file (`services.csv`) and columns.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub path: String,
    pub columns: Vec<String>,
}

/// The package's tables, in its order.
pub fn tables() -> &'static [Table] {
    static TABLES: OnceLock<Vec<Table>> = OnceLock::new();
    TABLES.get_or_init(|| {
        // The file is part of the build: a package that does not parse is a broken build, and
        // the unit test below says so; here it only gives no tables.
        let package: Value = serde_json::from_str(DATAPACKAGE).unwrap_or(Value::Null);
        let resources = package["resources"].as_array().cloned().unwrap_or_default();
        resources
            .iter()
            .filter_map(|r| {
                Some(Table {
                    name: r["name"].as_str()?.to_string(),
                    path: r["path"].as_str()?.to_string(),
                    columns: r["schema"]["fields"]
                        .as_array()?
                        .iter()
                        .filter_map(|f| f["name"].as_str().map(str::to_string))
                        .collect(),
                })
            })
            .collect()
    })
}

/// The table of this resource name.
pub fn table(name: &str) -> Option<&'static Table> {
    tables().iter().find(|t| t.name == name)
}

/// Rows as CSV under the table's header (RFC 4180; formulas neutralised by `csv::cell`). A
/// column a row does not hold is an empty cell.
pub fn csv(table: &Table, rows: &[Map<String, Value>]) -> String {
    let cell = |v: Option<&Value>| match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => crate::csv::cell(s).into_owned(),
        Some(other) => crate::csv::cell(&other.to_string()).into_owned(),
    };
    let mut out = table.columns.join(",");
    out.push_str("\r\n");
    for r in rows {
        let cells: Vec<String> = table.columns.iter().map(|c| cell(r.get(c))).collect();
        out.push_str(&cells.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_package_names_the_tables_of_hsds_3_0() {
        let names: Vec<&str> = tables().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), 21, "{names:?}");
        let sal = table("service_at_location").map(|t| t.path.as_str());
        assert_eq!(sal, Some("service_at_location.csv"));
        let service = table("service")
            .map(|t| t.columns.clone())
            .unwrap_or_default();
        assert_eq!(service.first().map(String::as_str), Some("id"));
        assert!(service.iter().any(|c| c == "last_modified"));
    }
}
