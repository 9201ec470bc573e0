//! Declared tables: [`TableSpec`] from CloudFormation resource properties
//! (`AWS::DynamoDB::Table`, `AWS::Serverless::SimpleTable`) and [`ensure_tables`], run at
//! start, which creates what is missing and keeps what exists.
//!
//! A spec is checked when it is built (a bad declaration stops the server before it binds),
//! and compared with an existing table on its schema only: key schema, the key attributes'
//! types, secondary indexes (keys and projection) and the stream's view type. Capacity and
//! billing mode are not compared: the embedded tables do not meter.

use std::collections::BTreeMap;
use std::fmt;

use dynoxide::Database;
use dynoxide::actions::create_table::CreateTableRequest;
use dynoxide::actions::delete_table::DeleteTableRequest;
use dynoxide::actions::describe_table::DescribeTableRequest;
use dynoxide::actions::describe_time_to_live::DescribeTimeToLiveRequest;
use dynoxide::actions::update_time_to_live::UpdateTimeToLiveRequest;
use serde_json::{Map, Value, json};

/// CloudFormation's DynamoDB table.
pub(crate) const TABLE: &str = "AWS::DynamoDB::Table";
/// SAM's one-key table.
pub(crate) const SIMPLE_TABLE: &str = "AWS::Serverless::SimpleTable";

/// `AWS::DynamoDB::Table` properties that change nothing in the embedded tables.
const IGNORED_TABLE_PROPERTIES: &[&str] = &[
    "BillingMode",
    "ProvisionedThroughput",
    "OnDemandThroughput",
    "WarmThroughput",
    "Tags",
    "SSESpecification",
    "PointInTimeRecoverySpecification",
    "ContributorInsightsSpecification",
    "KinesisStreamSpecification",
    "DeletionProtectionEnabled",
    "TableClass",
    "ResourcePolicy",
    "ImportSourceSpecification",
];

/// A declaration that cannot become a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The resource type is not a table.
    #[error("{0:?} is not a table type (use {TABLE} or {SIMPLE_TABLE})")]
    Type(String),
    /// A property is missing or malformed.
    #[error("{property}: {reason}")]
    Property {
        /// The property, e.g. `KeySchema[1].KeyType`.
        property: String,
        /// What is wrong.
        reason: String,
    },
}

fn property(property: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Property {
        property: property.into(),
        reason: reason.into(),
    }
}

/// A declared table: the CreateTable request it stands for, and its TTL attribute.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableSpec {
    name: String,
    /// The CreateTable request, in the DynamoDB API's JSON.
    create: Value,
    /// The attribute TTL reads, when TTL is declared enabled.
    ttl_attribute: Option<String>,
}

impl TableSpec {
    /// A spec from a resource's type and its `Properties` (intrinsics already resolved).
    /// `logical_id` names the table when `TableName` is absent, as CloudFormation names it
    /// after the stack and the resource.
    pub(crate) fn from_resource(
        resource_type: &str,
        properties: &Value,
        logical_id: Option<&str>,
    ) -> Result<Self, SpecError> {
        let empty = Map::new();
        let props = match properties {
            Value::Object(map) => map,
            Value::Null => &empty,
            _ => return Err(property("Properties", "must be an object")),
        };
        let name = match props.get("TableName") {
            Some(Value::String(name)) => name.clone(),
            Some(_) => return Err(property("TableName", "must be a string")),
            None => logical_id
                .map(str::to_owned)
                .ok_or_else(|| property("TableName", "is required"))?,
        };
        check_table_name(&name)?;
        match resource_type {
            TABLE => Self::table(name, props),
            SIMPLE_TABLE => Self::simple_table(name, props),
            other => Err(SpecError::Type(other.to_owned())),
        }
    }

    /// A spec from a `[[dynamodb.tables]]` entry: the properties themselves with an optional
    /// `Type` (default `AWS::DynamoDB::Table`), or a whole resource (`Type` and `Properties`).
    pub(crate) fn from_declaration(declaration: &Value) -> Result<Self, SpecError> {
        let Value::Object(map) = declaration else {
            return Err(property("(table)", "must be a table of properties"));
        };
        let resource_type = match map.get("Type") {
            None => TABLE,
            Some(Value::String(t)) => t.as_str(),
            Some(_) => return Err(property("Type", "must be a string")),
        };
        if let Some(properties) = map.get("Properties") {
            if let Some(extra) = map.keys().find(|k| *k != "Type" && *k != "Properties") {
                return Err(property(extra.clone(), "goes inside Properties"));
            }
            return Self::from_resource(resource_type, properties, None);
        }
        let mut properties = map.clone();
        properties.remove("Type");
        Self::from_resource(resource_type, &Value::Object(properties), None)
    }

    fn table(name: String, props: &Map<String, Value>) -> Result<Self, SpecError> {
        const KNOWN: &[&str] = &[
            "TableName",
            "KeySchema",
            "AttributeDefinitions",
            "GlobalSecondaryIndexes",
            "LocalSecondaryIndexes",
            "TimeToLiveSpecification",
            "StreamSpecification",
        ];
        if let Some(unknown) = props.keys().find(|k| {
            !KNOWN.contains(&k.as_str()) && !IGNORED_TABLE_PROPERTIES.contains(&k.as_str())
        }) {
            return Err(property(
                unknown.clone(),
                "is not an AWS::DynamoDB::Table property",
            ));
        }
        let key_schema = key_schema("KeySchema", props.get("KeySchema"))?;
        let attributes = attribute_definitions(props.get("AttributeDefinitions"))?;
        let throughput = throughput(props)?;
        let mut create = json!({
            "TableName": name,
            "KeySchema": key_schema,
            "AttributeDefinitions": attributes,
        });
        match &throughput {
            Some(pt) => {
                create["BillingMode"] = "PROVISIONED".into();
                create["ProvisionedThroughput"] = pt.clone();
            }
            None => create["BillingMode"] = "PAY_PER_REQUEST".into(),
        }
        for (key, with_throughput) in [
            ("GlobalSecondaryIndexes", true),
            ("LocalSecondaryIndexes", false),
        ] {
            if let Some(indexes) = props.get(key) {
                let indexes =
                    secondary_indexes(key, indexes, throughput.as_ref(), with_throughput)?;
                if !indexes.is_empty() {
                    create[key] = Value::Array(indexes);
                }
            }
        }
        if let Some(stream) = props.get("StreamSpecification") {
            let view = stream
                .get("StreamViewType")
                .and_then(Value::as_str)
                .ok_or_else(|| property("StreamSpecification.StreamViewType", "is required"))?;
            const VIEWS: &[&str] = &["KEYS_ONLY", "NEW_IMAGE", "OLD_IMAGE", "NEW_AND_OLD_IMAGES"];
            if !VIEWS.contains(&view) {
                return Err(property(
                    "StreamSpecification.StreamViewType",
                    format!("{view:?} is not one of {}", VIEWS.join(", ")),
                ));
            }
            create["StreamSpecification"] = json!({"StreamEnabled": true, "StreamViewType": view});
        }
        let ttl_attribute = match props.get("TimeToLiveSpecification") {
            None => None,
            Some(ttl) => {
                let enabled = ttl
                    .get("Enabled")
                    .map(boolean)
                    .transpose()?
                    .unwrap_or(false);
                let attribute = ttl.get("AttributeName").and_then(Value::as_str);
                match (enabled, attribute) {
                    (true, Some(a)) if !a.is_empty() => Some(a.to_owned()),
                    (true, _) => {
                        return Err(property(
                            "TimeToLiveSpecification.AttributeName",
                            "is required when TTL is enabled",
                        ));
                    }
                    (false, _) => None,
                }
            }
        };
        let spec = TableSpec {
            name,
            create,
            ttl_attribute,
        };
        spec.check_attributes()?;
        Ok(spec)
    }

    fn simple_table(name: String, props: &Map<String, Value>) -> Result<Self, SpecError> {
        const KNOWN: &[&str] = &[
            "TableName",
            "PrimaryKey",
            "ProvisionedThroughput",
            "SSESpecification",
            "Tags",
        ];
        if let Some(unknown) = props.keys().find(|k| !KNOWN.contains(&k.as_str())) {
            return Err(property(
                unknown.clone(),
                "is not an AWS::Serverless::SimpleTable property",
            ));
        }
        // SAM's default primary key.
        let (key, key_type) = match props.get("PrimaryKey") {
            None => ("id".to_owned(), "S"),
            Some(pk) => {
                let key = pk
                    .get("Name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| property("PrimaryKey.Name", "is required"))?;
                let key_type = match pk.get("Type").and_then(Value::as_str) {
                    Some("String") => "S",
                    Some("Number") => "N",
                    Some("Binary") => "B",
                    other => {
                        return Err(property(
                            "PrimaryKey.Type",
                            format!("{other:?} is not String, Number or Binary"),
                        ));
                    }
                };
                (key.to_owned(), key_type)
            }
        };
        let mut create = json!({
            "TableName": name,
            "KeySchema": [{"AttributeName": key, "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": key, "AttributeType": key_type}],
            "BillingMode": "PAY_PER_REQUEST",
        });
        if let Some(pt) = throughput(props)? {
            create["BillingMode"] = "PROVISIONED".into();
            create["ProvisionedThroughput"] = pt;
        }
        Ok(TableSpec {
            name,
            create,
            ttl_attribute: None,
        })
    }

    /// Every attribute a key uses is defined, and every definition is used (DynamoDB refuses
    /// both mistakes; saying so here names the declaration).
    fn check_attributes(&self) -> Result<(), SpecError> {
        let schema = Schema::of(&self.create);
        let mut used: Vec<&str> = schema.keys.iter().map(|(n, _)| n.as_str()).collect();
        for index in schema.global.values().chain(schema.local.values()) {
            used.extend(index.keys.iter().map(|(n, _)| n.as_str()));
        }
        for name in &used {
            if !schema.attributes.contains_key(*name) {
                return Err(property(
                    "AttributeDefinitions",
                    format!("the key attribute {name:?} is not defined"),
                ));
            }
        }
        if let Some(unused) = schema
            .attributes
            .keys()
            .find(|a| !used.contains(&a.as_str()))
        {
            return Err(property(
                "AttributeDefinitions",
                format!("{unused:?} is defined but no key or index uses it"),
            ));
        }
        Ok(())
    }

    /// The table's name.
    #[cfg(test)]
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The CreateTable request this spec stands for (DynamoDB API JSON).
    #[cfg(test)]
    pub(crate) fn create_request(&self) -> &Value {
        &self.create
    }

    /// The attribute TTL reads, when TTL is declared enabled.
    #[cfg(test)]
    pub(crate) fn ttl_attribute(&self) -> Option<&str> {
        self.ttl_attribute.as_deref()
    }
}

fn check_table_name(name: &str) -> Result<(), SpecError> {
    let ok = (3..=255).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(property(
            "TableName",
            format!("{name:?} is not a table name: 3 to 255 letters, digits, `_`, `-` or `.`"),
        ))
    }
}

fn boolean(value: &Value) -> Result<bool, SpecError> {
    match value {
        Value::Bool(b) => Ok(*b),
        // CloudFormation hands booleans through as strings often enough.
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(property("Enabled", format!("{other} is not a boolean"))),
    }
}

fn key_schema(at: &str, value: Option<&Value>) -> Result<Value, SpecError> {
    let elements = value
        .and_then(Value::as_array)
        .ok_or_else(|| property(at, "is required (a list of AttributeName and KeyType)"))?;
    let mut out = Vec::new();
    for (i, element) in elements.iter().enumerate() {
        let name = element
            .get("AttributeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| property(format!("{at}[{i}].AttributeName"), "is required"))?;
        let kind = element.get("KeyType").and_then(Value::as_str);
        let expected = if i == 0 { "HASH" } else { "RANGE" };
        if kind != Some(expected) {
            return Err(property(
                format!("{at}[{i}].KeyType"),
                format!("must be {expected} (the partition key first, then the sort key)"),
            ));
        }
        out.push(json!({"AttributeName": name, "KeyType": expected}));
    }
    if out.is_empty() || out.len() > 2 {
        return Err(property(at, "holds one or two keys"));
    }
    Ok(Value::Array(out))
}

fn attribute_definitions(value: Option<&Value>) -> Result<Value, SpecError> {
    let at = "AttributeDefinitions";
    let definitions = value.and_then(Value::as_array).ok_or_else(|| {
        property(
            at,
            "is required (a list of AttributeName and AttributeType)",
        )
    })?;
    let mut out = Vec::new();
    for (i, definition) in definitions.iter().enumerate() {
        let name = definition
            .get("AttributeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| property(format!("{at}[{i}].AttributeName"), "is required"))?;
        let kind = definition.get("AttributeType").and_then(Value::as_str);
        let Some(kind @ ("S" | "N" | "B")) = kind else {
            return Err(property(
                format!("{at}[{i}].AttributeType"),
                "must be S, N or B",
            ));
        };
        out.push(json!({"AttributeName": name, "AttributeType": kind}));
    }
    Ok(Value::Array(out))
}

/// The table's provisioned throughput, or `None` when it is billed per request.
/// CloudFormation's default billing mode is PROVISIONED, with a throughput given; without
/// one the table is on demand.
fn throughput(props: &Map<String, Value>) -> Result<Option<Value>, SpecError> {
    let mode = props.get("BillingMode").and_then(Value::as_str);
    if mode == Some("PAY_PER_REQUEST") {
        return Ok(None);
    }
    if let Some(mode) = mode.filter(|m| *m != "PROVISIONED") {
        return Err(property(
            "BillingMode",
            format!("{mode:?} is not PROVISIONED or PAY_PER_REQUEST"),
        ));
    }
    match props.get("ProvisionedThroughput") {
        None if mode == Some("PROVISIONED") => Err(property(
            "ProvisionedThroughput",
            "is required with BillingMode PROVISIONED",
        )),
        None => Ok(None),
        Some(pt) => Ok(Some(capacity("ProvisionedThroughput", pt)?)),
    }
}

fn capacity(at: &str, pt: &Value) -> Result<Value, SpecError> {
    let units = |key: &str| -> Result<i64, SpecError> {
        let value = pt.get(key);
        let n = match value {
            Some(Value::Number(n)) => n.as_i64(),
            // Parameters resolve to strings in CloudFormation.
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        n.filter(|n| *n >= 1).ok_or_else(|| {
            property(
                format!("{at}.{key}"),
                "must be a whole number of at least 1",
            )
        })
    };
    Ok(json!({
        "ReadCapacityUnits": units("ReadCapacityUnits")?,
        "WriteCapacityUnits": units("WriteCapacityUnits")?,
    }))
}

fn secondary_indexes(
    at: &str,
    value: &Value,
    table_throughput: Option<&Value>,
    global: bool,
) -> Result<Vec<Value>, SpecError> {
    let indexes = value
        .as_array()
        .ok_or_else(|| property(at, "must be a list"))?;
    let mut out = Vec::new();
    for (i, index) in indexes.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let name = index
            .get("IndexName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| property(format!("{here}.IndexName"), "is required"))?;
        let keys = key_schema(&format!("{here}.KeySchema"), index.get("KeySchema"))?;
        let projection = projection(&here, index.get("Projection"))?;
        let mut index = json!({"IndexName": name, "KeySchema": keys, "Projection": projection});
        if global && let Some(table) = table_throughput {
            index["ProvisionedThroughput"] =
                match value.get(i).and_then(|v| v.get("ProvisionedThroughput")) {
                    Some(pt) => capacity(&format!("{here}.ProvisionedThroughput"), pt)?,
                    None => table.clone(),
                };
        }
        out.push(index);
    }
    Ok(out)
}

fn projection(at: &str, value: Option<&Value>) -> Result<Value, SpecError> {
    let kind = value
        .and_then(|p| p.get("ProjectionType"))
        .and_then(Value::as_str)
        .unwrap_or("ALL");
    if !["ALL", "KEYS_ONLY", "INCLUDE"].contains(&kind) {
        return Err(property(
            format!("{at}.Projection.ProjectionType"),
            "must be ALL, KEYS_ONLY or INCLUDE",
        ));
    }
    let mut projection = json!({"ProjectionType": kind});
    if kind == "INCLUDE" {
        let attributes = value
            .and_then(|p| p.get("NonKeyAttributes"))
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty() && a.iter().all(Value::is_string))
            .ok_or_else(|| {
                property(
                    format!("{at}.Projection.NonKeyAttributes"),
                    "is required with INCLUDE (a list of attribute names)",
                )
            })?;
        projection["NonKeyAttributes"] = Value::Array(attributes.clone());
    }
    Ok(projection)
}

/// What is compared between a declaration and an existing table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Schema {
    /// (attribute, HASH|RANGE), in order.
    keys: Vec<(String, String)>,
    /// The key attributes' types.
    attributes: BTreeMap<String, String>,
    global: BTreeMap<String, Index>,
    local: BTreeMap<String, Index>,
    /// The stream's view type, when a stream is on.
    stream: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Index {
    keys: Vec<(String, String)>,
    projection: String,
    non_key: Vec<String>,
}

impl fmt::Display for Index {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", keys_text(&self.keys), self.projection)?;
        if !self.non_key.is_empty() {
            write!(f, " {:?}", self.non_key)?;
        }
        Ok(())
    }
}

fn keys_text(keys: &[(String, String)]) -> String {
    let parts: Vec<String> = keys.iter().map(|(n, k)| format!("{n} {k}")).collect();
    format!("[{}]", parts.join(", "))
}

impl Schema {
    /// The schema of a CreateTable request or of a DescribeTable `Table` (same field names).
    fn of(table: &Value) -> Self {
        let keys = |v: Option<&Value>| -> Vec<(String, String)> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|k| {
                            let s =
                                |f: &str| k.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
                            (s("AttributeName"), s("KeyType"))
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let indexes = |v: Option<&Value>| -> BTreeMap<String, Index> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|i| {
                            let name = i.get("IndexName").and_then(Value::as_str).unwrap_or("");
                            let projection = i.get("Projection");
                            let mut non_key: Vec<String> = projection
                                .and_then(|p| p.get("NonKeyAttributes"))
                                .and_then(Value::as_array)
                                .map(|a| {
                                    a.iter()
                                        .filter_map(Value::as_str)
                                        .map(str::to_owned)
                                        .collect()
                                })
                                .unwrap_or_default();
                            non_key.sort();
                            let index = Index {
                                keys: keys(i.get("KeySchema")),
                                projection: projection
                                    .and_then(|p| p.get("ProjectionType"))
                                    .and_then(Value::as_str)
                                    .unwrap_or("ALL")
                                    .to_owned(),
                                non_key,
                            };
                            (name.to_owned(), index)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let attributes = table
            .get("AttributeDefinitions")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|d| {
                        let s = |f: &str| d.get(f).and_then(Value::as_str).unwrap_or("").to_owned();
                        (s("AttributeName"), s("AttributeType"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let stream = table
            .get("StreamSpecification")
            .filter(|s| s.get("StreamEnabled").and_then(Value::as_bool) == Some(true))
            .and_then(|s| s.get("StreamViewType"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        Schema {
            keys: keys(table.get("KeySchema")),
            attributes,
            global: indexes(table.get("GlobalSecondaryIndexes")),
            local: indexes(table.get("LocalSecondaryIndexes")),
            stream,
        }
    }

    /// What changes from `self` (the existing table) to `declared`, one line each.
    fn differences(&self, declared: &Schema) -> Vec<String> {
        let mut out = Vec::new();
        if self.keys != declared.keys {
            out.push(format!(
                "key schema {} is declared {}",
                keys_text(&self.keys),
                keys_text(&declared.keys)
            ));
        }
        for (name, kind) in &declared.attributes {
            match self.attributes.get(name) {
                Some(old) if old != kind => {
                    out.push(format!("attribute {name:?} is {old}, declared {kind}"))
                }
                _ => {}
            }
        }
        for (what, old, new) in [
            ("global secondary index", &self.global, &declared.global),
            ("local secondary index", &self.local, &declared.local),
        ] {
            for (name, index) in new {
                match old.get(name) {
                    None => out.push(format!("{what} {name:?} is declared but absent")),
                    Some(existing) if existing != index => {
                        out.push(format!("{what} {name:?} is {existing}, declared {index}"))
                    }
                    Some(_) => {}
                }
            }
            for name in old.keys().filter(|n| !new.contains_key(*n)) {
                out.push(format!("{what} {name:?} exists but is not declared"));
            }
        }
        if self.stream != declared.stream {
            let text = |s: &Option<String>| s.clone().unwrap_or_else(|| "off".into());
            out.push(format!(
                "stream is {}, declared {}",
                text(&self.stream),
                text(&declared.stream)
            ));
        }
        out
    }
}

/// What [`ensure_tables`] did with one declared table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did not exist and was created.
    Created,
    /// It existed with the declared schema and was kept with its items.
    Kept,
    /// It exists with another schema: the old table was kept (`recreated: false`) or dropped
    /// and created anew.
    Changed {
        /// What differs, one line each.
        differences: Vec<String>,
        /// Whether the table was replaced.
        recreated: bool,
    },
}

/// What [`ensure_tables`] did, table by table, in declaration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TablesReport {
    /// (table name, outcome).
    pub tables: Vec<(String, Outcome)>,
}

impl TablesReport {
    /// The outcome for `name`.
    pub fn outcome(&self, name: &str) -> Option<&Outcome> {
        self.tables.iter().find(|(n, _)| n == name).map(|(_, o)| o)
    }
}

/// Why declared tables could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    /// Two declarations name the same table.
    #[error("table {0:?} is declared twice")]
    Duplicate(String),
    /// The engine refused an operation.
    #[error("table {table:?}: {error}")]
    Engine {
        /// The table.
        table: String,
        /// The engine's error.
        error: String,
    },
}

fn engine(table: &str) -> impl Fn(dynoxide::DynoxideError) -> TablesError + '_ {
    move |e| TablesError::Engine {
        table: table.to_owned(),
        error: e.to_string(),
    }
}

fn request<T: serde::de::DeserializeOwned>(table: &str, value: Value) -> Result<T, TablesError> {
    serde_json::from_value(value).map_err(|e| TablesError::Engine {
        table: table.to_owned(),
        error: e.to_string(),
    })
}

/// Makes the declared tables exist: a missing table is created; an existing one with the same
/// schema is kept with its items; one with another schema is reported (a warning and the
/// report) and kept, or dropped and created anew when `recreate` is set. TTL is then enabled
/// on the declared attribute.
pub(crate) fn ensure_tables(
    db: &Database,
    specs: &[TableSpec],
    recreate: bool,
) -> Result<TablesReport, TablesError> {
    let mut report = TablesReport::default();
    for (i, spec) in specs.iter().enumerate() {
        if specs[..i].iter().any(|s| s.name == spec.name) {
            return Err(TablesError::Duplicate(spec.name.clone()));
        }
    }
    for spec in specs {
        let name = spec.name.as_str();
        let existing = db.describe_table(request::<DescribeTableRequest>(
            name,
            json!({ "TableName": name }),
        )?);
        let outcome = match existing {
            Err(dynoxide::DynoxideError::ResourceNotFoundException(_)) => {
                create(db, spec)?;
                tracing::info!(table = name, "declared table created");
                Outcome::Created
            }
            Err(e) => return Err(engine(name)(e)),
            Ok(description) => {
                let description =
                    serde_json::to_value(&description).map_err(|e| TablesError::Engine {
                        table: name.to_owned(),
                        error: e.to_string(),
                    })?;
                let old = Schema::of(description.get("Table").unwrap_or(&Value::Null));
                let differences = old.differences(&Schema::of(&spec.create));
                if differences.is_empty() {
                    Outcome::Kept
                } else if recreate {
                    db.delete_table(request::<DeleteTableRequest>(
                        name,
                        json!({ "TableName": name }),
                    )?)
                    .map_err(engine(name))?;
                    create(db, spec)?;
                    tracing::warn!(
                        table = name,
                        changes = %differences.join("; "),
                        "declared table's schema changed: recreated it (its items are gone)"
                    );
                    Outcome::Changed {
                        differences,
                        recreated: true,
                    }
                } else {
                    tracing::warn!(
                        table = name,
                        changes = %differences.join("; "),
                        "declared table's schema changed: kept the existing table; set \
                         recreate_changed_tables to replace it"
                    );
                    Outcome::Changed {
                        differences,
                        recreated: false,
                    }
                }
            }
        };
        if let Some(attribute) = &spec.ttl_attribute {
            ensure_ttl(db, name, attribute)?;
        }
        report.tables.push((name.to_owned(), outcome));
    }
    Ok(report)
}

fn create(db: &Database, spec: &TableSpec) -> Result<(), TablesError> {
    let name = spec.name.as_str();
    db.create_table(request::<CreateTableRequest>(name, spec.create.clone())?)
        .map_err(engine(name))?;
    Ok(())
}

/// Enables TTL on `attribute` unless it already is; a TTL on another attribute is switched.
fn ensure_ttl(db: &Database, name: &str, attribute: &str) -> Result<(), TablesError> {
    let current = db
        .describe_time_to_live(request::<DescribeTimeToLiveRequest>(
            name,
            json!({ "TableName": name }),
        )?)
        .map_err(engine(name))?;
    let current = serde_json::to_value(&current).unwrap_or(Value::Null);
    let description = &current["TimeToLiveDescription"];
    let status = description["TimeToLiveStatus"]
        .as_str()
        .unwrap_or("DISABLED");
    let enabled_on = description["AttributeName"].as_str();
    if status == "ENABLED" && enabled_on == Some(attribute) {
        return Ok(());
    }
    let update = |attr: &str, enabled: bool| -> Result<(), TablesError> {
        db.update_time_to_live(request::<UpdateTimeToLiveRequest>(
            name,
            json!({
                "TableName": name,
                "TimeToLiveSpecification": {"AttributeName": attr, "Enabled": enabled},
            }),
        )?)
        .map_err(engine(name))?;
        Ok(())
    };
    if status == "ENABLED"
        && let Some(old) = enabled_on
    {
        update(old, false)?;
    }
    update(attribute, true)?;
    tracing::info!(
        table = name,
        attribute,
        "TTL enabled on the declared attribute"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connections() -> Value {
        json!({
            "TableName": "connections",
            "KeySchema": [{"AttributeName": "connectionId", "KeyType": "HASH"}],
            "AttributeDefinitions": [
                {"AttributeName": "connectionId", "AttributeType": "S"},
                {"AttributeName": "room", "AttributeType": "S"},
            ],
            "BillingMode": "PAY_PER_REQUEST",
            "GlobalSecondaryIndexes": [{
                "IndexName": "byRoom",
                "KeySchema": [{"AttributeName": "room", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }],
            "TimeToLiveSpecification": {"AttributeName": "expiresAt", "Enabled": true},
            "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
        })
    }

    fn spec(props: Value) -> TableSpec {
        TableSpec::from_resource(TABLE, &props, None).unwrap()
    }

    fn error(kind: &str, props: Value) -> String {
        TableSpec::from_resource(kind, &props, None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_cloudformation_table_becomes_its_create_request() {
        let s = spec(connections());
        assert_eq!(s.name(), "connections");
        assert_eq!(s.ttl_attribute(), Some("expiresAt"));
        let create = s.create_request();
        assert_eq!(create["BillingMode"], "PAY_PER_REQUEST");
        assert_eq!(create["GlobalSecondaryIndexes"][0]["IndexName"], "byRoom");
        assert!(
            create["GlobalSecondaryIndexes"][0]
                .get("ProvisionedThroughput")
                .is_none()
        );
        assert_eq!(
            create["StreamSpecification"],
            json!({"StreamEnabled": true, "StreamViewType": "NEW_AND_OLD_IMAGES"})
        );
        // TTL is not part of CreateTable.
        assert!(create.get("TimeToLiveSpecification").is_none());
    }

    #[test]
    fn provisioned_tables_carry_throughput_to_their_indexes() {
        let mut props = connections();
        props["BillingMode"] = "PROVISIONED".into();
        // Parameters arrive as strings.
        props["ProvisionedThroughput"] = json!({"ReadCapacityUnits": "5", "WriteCapacityUnits": 2});
        let s = spec(props.clone());
        let pt = json!({"ReadCapacityUnits": 5, "WriteCapacityUnits": 2});
        assert_eq!(s.create_request()["ProvisionedThroughput"], pt);
        assert_eq!(
            s.create_request()["GlobalSecondaryIndexes"][0]["ProvisionedThroughput"],
            pt
        );
        props
            .as_object_mut()
            .unwrap()
            .remove("ProvisionedThroughput");
        assert!(error(TABLE, props).contains("ProvisionedThroughput: is required"));
        // CloudFormation's default billing mode with a throughput given.
        let mut props = connections();
        props.as_object_mut().unwrap().remove("BillingMode");
        props["ProvisionedThroughput"] = json!({"ReadCapacityUnits": 1, "WriteCapacityUnits": 1});
        assert_eq!(spec(props).create_request()["BillingMode"], "PROVISIONED");
    }

    #[test]
    fn local_indexes_and_include_projections() {
        let props = json!({
            "TableName": "messages",
            "KeySchema": [
                {"AttributeName": "room", "KeyType": "HASH"},
                {"AttributeName": "ts", "KeyType": "RANGE"},
            ],
            "AttributeDefinitions": [
                {"AttributeName": "room", "AttributeType": "S"},
                {"AttributeName": "ts", "AttributeType": "N"},
                {"AttributeName": "author", "AttributeType": "S"},
            ],
            "LocalSecondaryIndexes": [{
                "IndexName": "byAuthor",
                "KeySchema": [
                    {"AttributeName": "room", "KeyType": "HASH"},
                    {"AttributeName": "author", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["text"]},
            }],
        });
        let s = spec(props.clone());
        assert_eq!(
            s.create_request()["LocalSecondaryIndexes"][0]["Projection"],
            json!({"ProjectionType": "INCLUDE", "NonKeyAttributes": ["text"]})
        );
        let mut bad = props;
        bad["LocalSecondaryIndexes"][0]["Projection"] = json!({"ProjectionType": "INCLUDE"});
        assert!(error(TABLE, bad).contains("NonKeyAttributes"));
    }

    #[test]
    fn a_simple_table_has_one_hash_key() {
        let s = TableSpec::from_resource(
            SIMPLE_TABLE,
            &json!({"PrimaryKey": {"Name": "connectionId", "Type": "String"}}),
            Some("ConnectionsTable"),
        )
        .unwrap();
        assert_eq!(s.name(), "ConnectionsTable");
        assert_eq!(
            s.create_request()["KeySchema"],
            json!([{"AttributeName": "connectionId", "KeyType": "HASH"}])
        );
        assert_eq!(
            s.create_request()["AttributeDefinitions"],
            json!([{"AttributeName": "connectionId", "AttributeType": "S"}])
        );
        // SAM's default key is `id`, a string.
        let s =
            TableSpec::from_resource(SIMPLE_TABLE, &json!({"TableName": "tab1"}), None).unwrap();
        assert_eq!(s.create_request()["KeySchema"][0]["AttributeName"], "id");
        let n = TableSpec::from_resource(
            SIMPLE_TABLE,
            &json!({"TableName": "tab2", "PrimaryKey": {"Name": "n", "Type": "Number"}}),
            None,
        )
        .unwrap();
        assert_eq!(
            n.create_request()["AttributeDefinitions"][0]["AttributeType"],
            "N"
        );
        assert!(
            error(
                SIMPLE_TABLE,
                json!({"TableName": "tab3", "PrimaryKey": {"Name": "k", "Type": "Text"}})
            )
            .contains("PrimaryKey.Type")
        );
        assert!(
            error(SIMPLE_TABLE, json!({"TableName": "tab4", "KeySchema": []}))
                .contains("KeySchema")
        );
    }

    #[test]
    fn mistakes_name_the_property() {
        assert!(error(TABLE, json!({"KeySchema": []})).starts_with("TableName: is required"));
        assert!(error(TABLE, json!({"TableName": "a/b"})).contains("not a table name"));
        let mut p = connections();
        p["KeySchema"][0]["KeyType"] = "RANGE".into();
        assert!(error(TABLE, p).contains("KeySchema[0].KeyType"));
        let mut p = connections();
        p["AttributeDefinitions"][1]["AttributeType"] = "STRING".into();
        assert!(error(TABLE, p).contains("AttributeDefinitions[1].AttributeType"));
        let mut p = connections();
        p.as_object_mut().unwrap().remove("GlobalSecondaryIndexes");
        assert!(error(TABLE, p).contains("\"room\" is defined but no key or index uses it"));
        let mut p = connections();
        p["KeySchema"][0]["AttributeName"] = "id".into();
        assert!(error(TABLE, p).contains("\"id\" is not defined"));
        let mut p = connections();
        p["TimeToLiveSpecification"] = json!({"Enabled": "true"});
        assert!(error(TABLE, p).contains("TimeToLiveSpecification.AttributeName"));
        let mut p = connections();
        p["StreamSpecification"] = json!({"StreamViewType": "ALL"});
        assert!(error(TABLE, p).contains("StreamViewType"));
        let mut p = connections();
        p["KeySchemas"] = json!([]);
        assert!(error(TABLE, p).contains("KeySchemas: is not an AWS::DynamoDB::Table property"));
        assert!(error("AWS::S3::Bucket", json!({"TableName": "abc"})).contains("not a table type"));
        // Properties CloudFormation knows and the embedded tables ignore are accepted.
        let mut p = connections();
        p["Tags"] = json!([{"Key": "a", "Value": "b"}]);
        p["PointInTimeRecoverySpecification"] = json!({"PointInTimeRecoveryEnabled": true});
        spec(p);
    }

    #[test]
    fn declarations_take_properties_inline_or_as_a_resource() {
        let mut inline = connections();
        inline["Type"] = TABLE.into();
        let resource = json!({"Type": TABLE, "Properties": connections()});
        assert_eq!(
            TableSpec::from_declaration(&inline).unwrap(),
            TableSpec::from_declaration(&resource).unwrap()
        );
        assert_eq!(
            TableSpec::from_declaration(&connections()).unwrap(),
            spec(connections())
        );
        let simple = json!({"Type": SIMPLE_TABLE, "TableName": "simple"});
        assert_eq!(
            TableSpec::from_declaration(&simple)
                .unwrap()
                .create_request()["KeySchema"][0]["AttributeName"],
            "id"
        );
        let bad = json!({"Type": TABLE, "Properties": connections(), "TableName": "x"});
        assert!(
            TableSpec::from_declaration(&bad)
                .unwrap_err()
                .to_string()
                .contains("inside Properties")
        );
    }

    fn items(db: &Database, table: &str) -> usize {
        let scan = serde_json::from_value(json!({"TableName": table})).unwrap();
        db.scan(scan).unwrap().count
    }

    fn put(db: &Database, table: &str, id: &str) {
        let put = serde_json::from_value(json!({
            "TableName": table,
            "Item": {"connectionId": {"S": id}, "room": {"S": "lobby"}},
        }))
        .unwrap();
        db.put_item(put).unwrap();
    }

    fn ttl_of(db: &Database, table: &str) -> Value {
        let req = serde_json::from_value(json!({"TableName": table})).unwrap();
        serde_json::to_value(db.describe_time_to_live(req).unwrap()).unwrap()["TimeToLiveDescription"]
            .clone()
    }

    #[test]
    fn missing_tables_are_created_and_existing_ones_kept_with_their_items() {
        let db = Database::memory().unwrap();
        let specs = [spec(connections())];
        let report = ensure_tables(&db, &specs, false).unwrap();
        assert_eq!(report.outcome("connections"), Some(&Outcome::Created));
        let ttl = ttl_of(&db, "connections");
        assert_eq!(ttl["TimeToLiveStatus"], "ENABLED");
        assert_eq!(ttl["AttributeName"], "expiresAt");
        put(&db, "connections", "a");
        let report = ensure_tables(&db, &specs, false).unwrap();
        assert_eq!(report.outcome("connections"), Some(&Outcome::Kept));
        assert_eq!(items(&db, "connections"), 1);
        // Billing is not schema.
        let mut provisioned = connections();
        provisioned["BillingMode"] = "PROVISIONED".into();
        provisioned["ProvisionedThroughput"] =
            json!({"ReadCapacityUnits": 1, "WriteCapacityUnits": 1});
        let report = ensure_tables(&db, &[spec(provisioned)], false).unwrap();
        assert_eq!(report.outcome("connections"), Some(&Outcome::Kept));
    }

    #[test]
    fn a_schema_change_is_reported_and_the_old_table_kept_unless_recreate() {
        let db = Database::memory().unwrap();
        ensure_tables(&db, &[spec(connections())], false).unwrap();
        put(&db, "connections", "a");
        let mut changed = connections();
        changed["GlobalSecondaryIndexes"][0]["Projection"] = json!({"ProjectionType": "KEYS_ONLY"});
        changed["StreamSpecification"] = json!({"StreamViewType": "KEYS_ONLY"});
        let report = ensure_tables(&db, &[spec(changed.clone())], false).unwrap();
        let Some(Outcome::Changed {
            differences,
            recreated: false,
        }) = report.outcome("connections")
        else {
            panic!("{report:?}");
        };
        assert_eq!(differences.len(), 2, "{differences:?}");
        assert!(differences[0].contains("\"byRoom\""), "{differences:?}");
        assert!(differences[0].contains("KEYS_ONLY"), "{differences:?}");
        assert!(
            differences[1].starts_with("stream is NEW_AND_OLD_IMAGES"),
            "{differences:?}"
        );
        assert_eq!(items(&db, "connections"), 1, "the old table is kept");
        let report = ensure_tables(&db, &[spec(changed.clone())], true).unwrap();
        assert!(matches!(
            report.outcome("connections"),
            Some(Outcome::Changed {
                recreated: true,
                ..
            })
        ));
        assert_eq!(items(&db, "connections"), 0, "recreated empty");
        let report = ensure_tables(&db, &[spec(changed)], false).unwrap();
        assert_eq!(report.outcome("connections"), Some(&Outcome::Kept));
    }

    #[test]
    fn key_changes_and_index_changes_are_named() {
        let db = Database::memory().unwrap();
        ensure_tables(&db, &[spec(connections())], false).unwrap();
        let mut p = connections();
        p["KeySchema"] = json!([
            {"AttributeName": "connectionId", "KeyType": "HASH"},
            {"AttributeName": "room", "KeyType": "RANGE"},
        ]);
        p["AttributeDefinitions"][0]["AttributeType"] = "N".into();
        p.as_object_mut().unwrap().remove("GlobalSecondaryIndexes");
        let report = ensure_tables(&db, &[spec(p)], false).unwrap();
        let Some(Outcome::Changed { differences, .. }) = report.outcome("connections") else {
            panic!("{report:?}");
        };
        let text = differences.join("\n");
        assert!(
            text.contains(
                "key schema [connectionId HASH] is declared [connectionId HASH, room RANGE]"
            ),
            "{text}"
        );
        assert!(
            text.contains("attribute \"connectionId\" is S, declared N"),
            "{text}"
        );
        assert!(
            text.contains("global secondary index \"byRoom\" exists but is not declared"),
            "{text}"
        );
    }

    #[test]
    fn a_changed_ttl_attribute_is_switched() {
        let db = Database::memory().unwrap();
        ensure_tables(&db, &[spec(connections())], false).unwrap();
        let mut p = connections();
        p["TimeToLiveSpecification"] = json!({"AttributeName": "ttl", "Enabled": true});
        let report = ensure_tables(&db, &[spec(p)], false).unwrap();
        assert_eq!(report.outcome("connections"), Some(&Outcome::Kept));
        assert_eq!(ttl_of(&db, "connections")["AttributeName"], "ttl");
    }

    #[test]
    fn a_table_declared_twice_is_refused() {
        let db = Database::memory().unwrap();
        let e = ensure_tables(&db, &[spec(connections()), spec(connections())], false).unwrap_err();
        assert!(e.to_string().contains("declared twice"), "{e}");
    }

    #[test]
    fn several_tables_are_reported_in_order() {
        let db = Database::memory().unwrap();
        let simple = TableSpec::from_resource(SIMPLE_TABLE, &json!({}), Some("Simple")).unwrap();
        let report = ensure_tables(&db, &[spec(connections()), simple], false).unwrap();
        let names: Vec<&str> = report.tables.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["connections", "Simple"]);
        assert!(report.tables.iter().all(|(_, o)| *o == Outcome::Created));
    }
}
