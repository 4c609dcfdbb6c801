//! Reading JSON that may hold personal data (a case file, an API body). An error names where the
//! problem is and what it is — the field's path, the line and column, the type expected — and
//! never the value: serde's own messages quote it (`invalid type: string "Youssef", expected
//! u32`), and a terminal, a log or an HTTP answer is no place for a person's data.

use serde::de::DeserializeOwned;

/// Parses `bytes` as JSON into `T`; the error carries no value from the input.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        describe(e.inner(), (path != ".").then_some(path.as_str()))
    })?;
    de.end().map_err(|e| describe(&e, None))?;
    Ok(value)
}

fn describe(e: &serde_json::Error, path: Option<&str>) -> String {
    let at = format!("line {} column {}", e.line(), e.column());
    let problem = match e.classify() {
        serde_json::error::Category::Data => data_problem(&e.to_string()),
        serde_json::error::Category::Eof => "the JSON ends too early".to_string(),
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            "not valid JSON".to_string()
        }
    };
    match path {
        Some(path) => format!("`{path}` ({at}): {problem}"),
        None => format!("{at}: {problem}"),
    }
}

/// serde's data errors, kept only in the shapes that name no value: a missing, unknown or
/// repeated field (the name is the schema's, or the key the file used), a wrong type or value
/// with what was expected (the expectation comes from our types), a wrong length.
fn data_problem(message: &str) -> String {
    let message = message.split(" at line ").next().unwrap_or_default();
    let expected = message
        .split_once(", expected ")
        .map(|(_, what)| format!(", expected {what}"))
        .unwrap_or_default();
    if message.starts_with("missing field `")
        || message.starts_with("duplicate field `")
        || message.starts_with("unknown field `")
    {
        message.to_string()
    } else if message.starts_with("invalid type: ") {
        format!("wrong type{expected}")
    } else if message.starts_with("invalid length ") {
        format!("wrong number of items{expected}")
    } else if message.starts_with("unknown variant ") || message.starts_with("invalid value: ") {
        format!("not an accepted value{expected}")
    } else {
        // A message of our own types' making: it may quote what it read.
        "not an accepted value".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle_core::payload::CaseData;

    const PLANTED: &str = "Zainab-Canary-7731";

    fn case_json(person: &str) -> String {
        format!(
            r#"{{"case_type":"general","site":"medenine","needs":["shelter"],
               "consent":{{"given":true,"explained_by":"aicha","recorded_at":"2026-11-27T09:30:00Z"}},
               "person":{person}}}"#
        )
    }

    #[test]
    fn errors_name_the_field_and_the_problem_never_the_value() {
        let cases = [
            (
                format!(r#"{{"age":"{PLANTED}"}}"#),
                "wrong type, expected u32",
            ),
            (
                format!(r#"{{"first_name":7731, "x":"{PLANTED}"}}"#),
                "wrong type",
            ),
            (
                format!(r#"{{"frist_name":"{PLANTED}"}}"#),
                "unknown field `frist_name`",
            ),
            (format!(r#"{{"age":-{}}}"#, 7731), "expected u32"),
            (
                format!(r#"{{"first_name":"{PLANTED}"}} trailing"#),
                "not valid JSON",
            ),
            (format!(r#"{{"first_name":"{PLANTED}"#), "ends too early"),
        ];
        for (person, problem) in cases {
            let text = case_json(&person);
            let err = parse::<CaseData>(text.as_bytes()).expect_err(&person);
            assert!(err.contains(problem), "{err:?} should say {problem:?}");
            assert!(!err.contains("Canary"), "the value leaked: {err}");
            assert!(!err.contains("7731"), "the value leaked: {err}");
        }
        let err = parse::<CaseData>(case_json(r#"{"age":"x"}"#).as_bytes()).unwrap_err();
        assert!(err.starts_with("`person.age`"), "{err}");
    }

    #[test]
    fn a_good_file_reads() {
        let data: CaseData = parse(case_json(r#"{"first_name":"Youssef","age":16}"#).as_bytes())
            .expect("a valid case file");
        assert_eq!(data.person.age, Some(16));
    }
}
