//! The raw IAM query-API response (`GetAccountAuthorizationDetailsResponse`
//! XML, documents URL-encoded) turned into the same JSON shape the AWS CLI
//! prints, so one reader serves both.

use super::InputError;
use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::{Map, Value};

/// Lists that may be empty (`<GroupList/>`) and must still read as lists.
const LISTS: [&str; 13] = [
    "UserDetailList",
    "GroupDetailList",
    "RoleDetailList",
    "Policies",
    "GroupList",
    "AttachedManagedPolicies",
    "UserPolicyList",
    "GroupPolicyList",
    "RolePolicyList",
    "PolicyVersionList",
    "Tags",
    "InstanceProfileList",
    "Roles",
];

/// Deepest element nesting accepted. A real response nests about eight
/// deep; the limit keeps a hostile one from building a value so deep that
/// walking or dropping it exhausts the stack.
const MAX_DEPTH: usize = 64;

const BOOLEANS: [&str; 3] = ["IsDefaultVersion", "IsAttachable", "IsTruncated"];

const GAAD_LISTS: [&str; 4] = [
    "UserDetailList",
    "GroupDetailList",
    "RoleDetailList",
    "Policies",
];

/// The authorization-details map inside a parsed document, whether it is the
/// CLI's output or a raw response wrapped in `...Response`/`...Result`.
pub fn unwrap_gaad(v: &Value) -> Option<&Map<String, Value>> {
    let map = v.as_object()?;
    if GAAD_LISTS.iter().any(|k| map.contains_key(*k)) {
        return Some(map);
    }
    let inner = map
        .get("GetAccountAuthorizationDetailsResponse")?
        .get("GetAccountAuthorizationDetailsResult")?;
    unwrap_gaad(inner)
}

struct Element {
    name: String,
    children: Vec<(String, Value)>,
    text: String,
}

fn finish(e: Element) -> Value {
    if e.children.is_empty() {
        let text = e.text.trim();
        if LISTS.contains(&e.name.as_str()) && text.is_empty() {
            return Value::Array(Vec::new());
        }
        if BOOLEANS.contains(&e.name.as_str()) {
            return Value::Bool(text == "true");
        }
        return Value::String(text.to_owned());
    }
    if LISTS.contains(&e.name.as_str()) || e.children.iter().all(|(n, _)| n == "member") {
        return Value::Array(e.children.into_iter().map(|(_, v)| v).collect());
    }
    let mut map = Map::new();
    for (name, value) in e.children {
        map.insert(name, value);
    }
    Value::Object(map)
}

/// Parses an XML document into JSON: elements become objects, `member` lists arrays.
pub fn parse(name: &str, text: &str) -> Result<Value, InputError> {
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = vec![Element {
        name: String::new(),
        children: Vec::new(),
        text: String::new(),
    }];
    let error = |reader: &Reader<&[u8]>, message: String| {
        let (line, column) = super::line_column(text.as_bytes(), reader.buffer_position() as usize);
        InputError::Syntax {
            path: name.to_owned(),
            line,
            column,
            message,
        }
    };
    loop {
        match reader.read_event() {
            Err(e) => return Err(error(&reader, e.to_string())),
            Ok(Event::Eof) => break,
            Ok(Event::Start(start)) => {
                // The stack holds the document root too.
                if stack.len() > MAX_DEPTH {
                    return Err(error(
                        &reader,
                        format!("elements nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let tag = start.local_name().as_ref().to_owned();
                stack.push(Element {
                    name: tag,
                    children: Vec::new(),
                    text: String::new(),
                });
            }
            Ok(Event::Empty(start)) => {
                let tag = start.local_name().as_ref().to_owned();
                let value = finish(Element {
                    name: tag.clone(),
                    children: Vec::new(),
                    text: String::new(),
                });
                if let Some(parent) = stack.last_mut() {
                    parent.children.push((tag, value));
                }
            }
            Ok(Event::End(_)) => {
                if stack.len() < 2 {
                    return Err(error(&reader, "unbalanced closing tag".into()));
                }
                if let Some(element) = stack.pop() {
                    let tag = element.name.clone();
                    let value = finish(element);
                    if let Some(parent) = stack.last_mut() {
                        parent.children.push((tag, value));
                    }
                }
            }
            Ok(Event::Text(t)) => {
                // Entity references arrive as separate events, so text needs no unescaping.
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&t.into_inner());
                }
            }
            Ok(Event::GeneralRef(r)) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match r.as_ref() {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => return Err(error(&reader, format!("unknown entity &{other};"))),
                    },
                    Err(e) => return Err(error(&reader, e.to_string())),
                };
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(&resolved);
                }
            }
            Ok(Event::CData(c)) => {
                if let Some(top) = stack.last_mut() {
                    top.text.push_str(c.as_ref());
                }
            }
            Ok(_) => {}
        }
    }
    if stack.len() != 1 {
        return Err(error(
            &reader,
            "unexpected end of document: unclosed element".into(),
        ));
    }
    let root = stack.pop().map(|r| r.children).unwrap_or_default();
    let mut map = Map::new();
    for (name, value) in root {
        map.insert(name, value);
    }
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_raw_response() {
        let xml = r#"<?xml version="1.0"?>
<GetAccountAuthorizationDetailsResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">
  <GetAccountAuthorizationDetailsResult>
    <IsTruncated>false</IsTruncated>
    <UserDetailList>
      <member>
        <GroupList><member>Admins</member></GroupList>
        <AttachedManagedPolicies/>
        <UserName>Alice</UserName>
        <Arn>arn:aws:iam::123456789012:user/Alice</Arn>
        <UserPolicyList><member><PolicyName>p</PolicyName>
          <PolicyDocument>%7B%22Statement%22%3A%5B%5D%7D</PolicyDocument></member></UserPolicyList>
      </member>
    </UserDetailList>
    <GroupDetailList/>
  </GetAccountAuthorizationDetailsResult>
</GetAccountAuthorizationDetailsResponse>"#;
        let v = parse("f.xml", xml).unwrap();
        let gaad = unwrap_gaad(&v).unwrap();
        let user = &gaad["UserDetailList"][0];
        assert_eq!(user["GroupList"][0], "Admins");
        assert_eq!(user["AttachedManagedPolicies"], Value::Array(vec![]));
        assert_eq!(
            user["UserPolicyList"][0]["PolicyDocument"],
            "%7B%22Statement%22%3A%5B%5D%7D"
        );
        assert_eq!(gaad["IsTruncated"], false);
        assert_eq!(gaad["GroupDetailList"], Value::Array(vec![]));
    }

    #[test]
    fn deep_nesting_is_an_error_naming_where() {
        let ok = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(parse("f.xml", &ok).is_ok());
        let deep = format!("<r>\n{}", "<a>".repeat(100_000));
        let Err(InputError::Syntax { line, message, .. }) = parse("f.xml", &deep) else {
            panic!("not a syntax error")
        };
        assert_eq!(line, 2);
        assert_eq!(message, "elements nested deeper than 64 levels");
    }

    #[test]
    fn broken_xml_is_located() {
        assert!(matches!(
            parse("f.xml", "<a>\n<b></a>"),
            Err(InputError::Syntax { .. })
        ));
        assert!(matches!(
            parse("f.xml", "<a>\n<b>"),
            Err(InputError::Syntax { .. })
        ));
    }
}
