//! Reading the tables for the inspector: each table with its key and item count, and its
//! items a page at a time.
//!
//! Both read the engine's own `Database` in process (on a blocking thread, as every engine
//! call runs), not through its HTTP front: the inspector's access rule has already been
//! applied, and these are not DynamoDB calls (no metrics, no in-flight bound). A page is a
//! `Scan` with a `Limit`; the key of its last item (what `LastEvaluatedKey` is) goes back to
//! the caller as an opaque token (base64url of its DynamoDB JSON) that starts the next page.

use base64::Engine as _;
use dynoxide::actions::scan::ScanRequest;
use dynoxide::types::{KeySchemaElement, KeyType};
use dynoxide::{DynoxideError, TableMetadata};
use serde::Serialize;

use super::DynamoDb;

/// Items per page when the caller does not say.
pub(crate) const DEFAULT_PAGE: usize = 25;
/// The most items a page holds.
pub(crate) const MAX_PAGE: usize = 100;

/// One table as the inspector lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TableSummary {
    /// The table's name.
    pub name: String,
    /// Items in it now (counted when listed).
    pub item_count: u64,
    /// The items' size, as DynamoDB counts item sizes.
    pub size_bytes: u64,
    /// The partition key's attribute name.
    pub partition_key: Option<String>,
    /// The sort key's attribute name, when the table has one.
    pub sort_key: Option<String>,
}

/// One page of a table's items.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ItemsPage {
    /// The table.
    pub table: String,
    /// The items, in DynamoDB JSON (`{"id": {"S": "a"}}`), in the table's scan order.
    pub items: Vec<serde_json::Value>,
    /// The token of the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Why the tables could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BrowseError {
    /// No table has this name.
    #[error("no table named {0}")]
    NoTable(String),
    /// The start token is not one a page ended with.
    #[error("the start token is not one a page of this table ended with: {0}")]
    BadToken(String),
    /// The engine stopped (the server is shutting down).
    #[error("the DynamoDB engine has stopped")]
    Stopped,
    /// The engine failed.
    #[error("the DynamoDB engine failed: {0}")]
    Engine(String),
}

impl From<DynoxideError> for BrowseError {
    fn from(e: DynoxideError) -> Self {
        BrowseError::Engine(e.to_string())
    }
}

impl DynamoDb {
    /// Every table with its key and item count, by name.
    pub(crate) async fn table_summaries(&self) -> Result<Vec<TableSummary>, BrowseError> {
        let engine = self.engine.lock().await;
        let engine = engine.as_ref().ok_or(BrowseError::Stopped)?;
        let info = engine
            .read(|db| db.database_info())
            .await
            .ok_or(BrowseError::Stopped)??;
        let mut tables: Vec<_> = info
            .tables
            .into_iter()
            .map(|entry| {
                let (partition_key, sort_key) = key_names(entry.metadata.as_ref());
                TableSummary {
                    partition_key,
                    sort_key,
                    item_count: u64::try_from(entry.stats.item_count).unwrap_or(0),
                    size_bytes: entry.stats.size_bytes,
                    name: entry.stats.table_name,
                }
            })
            .collect();
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tables)
    }

    /// Up to `limit` items of `table` (at most [`MAX_PAGE`]), from the start or from where the
    /// page that gave `start` ended. The page has a `next` token only when more items follow:
    /// one item more than asked for is read to know.
    pub(crate) async fn items_page(
        &self,
        table: &str,
        limit: usize,
        start: Option<&str>,
    ) -> Result<ItemsPage, BrowseError> {
        let start = start.map(decode_token).transpose()?;
        let limit = limit.clamp(1, MAX_PAGE);
        let engine = self.engine.lock().await;
        let engine = engine.as_ref().ok_or(BrowseError::Stopped)?;
        let with_token = start.is_some();
        let request = ScanRequest {
            table_name: table.to_owned(),
            limit: Some(limit + 1),
            exclusive_start_key_raw: start,
            ..ScanRequest::default()
        };
        let scanned = engine
            .read(move |db| {
                let Some(metadata) = db.get_table_metadata(&request.table_name)? else {
                    return Ok(None);
                };
                let response = db.scan(request)?;
                // Serialised as the wire has it (number sets in DynamoDB's order).
                let response = serde_json::to_value(&response)
                    .map_err(|e| DynoxideError::InternalServerError(e.to_string()))?;
                Ok(Some((key_names(Some(&metadata)), response)))
            })
            .await
            .ok_or(BrowseError::Stopped)?;
        let ((partition_key, sort_key), mut response) = match scanned {
            Ok(Some(scanned)) => scanned,
            Ok(None) | Err(DynoxideError::ResourceNotFoundException(_)) => {
                return Err(BrowseError::NoTable(table.to_owned()));
            }
            Err(
                DynoxideError::ValidationException(why) | DynoxideError::EnvelopedValidation(why),
            ) if with_token => return Err(BrowseError::BadToken(why)),
            Err(e) => return Err(e.into()),
        };
        let mut items = match response.get_mut("Items").map(serde_json::Value::take) {
            Some(serde_json::Value::Array(items)) => items,
            _ => Vec::new(),
        };
        let next = if items.len() > limit {
            // More follow: the next page starts after the last item of this one, whose key
            // is what `LastEvaluatedKey` would have been.
            items.truncate(limit);
            let last = &items[limit - 1];
            let key: serde_json::Map<_, _> = [partition_key, sort_key]
                .into_iter()
                .flatten()
                .filter_map(|name| Some((name.clone(), last.get(&name)?.clone())))
                .collect();
            Some(encode_token(&serde_json::Value::Object(key)))
        } else {
            // A page cut short by DynamoDB's 1 MB bound still ends with a key.
            response.get("LastEvaluatedKey").map(encode_token)
        };
        Ok(ItemsPage {
            table: table.to_owned(),
            items,
            next,
        })
    }
}

/// The partition and sort key names of a table.
fn key_names(metadata: Option<&TableMetadata>) -> (Option<String>, Option<String>) {
    let keys = metadata
        .and_then(|m| serde_json::from_str::<Vec<KeySchemaElement>>(&m.key_schema).ok())
        .unwrap_or_default();
    let key = |kind: KeyType| {
        keys.iter()
            .find(|k| k.key_type == kind)
            .map(|k| k.attribute_name.clone())
    };
    (key(KeyType::HASH), key(KeyType::RANGE))
}

/// A page's `LastEvaluatedKey` as a token.
fn encode_token(key: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_string())
}

/// A token back into the `ExclusiveStartKey` it was made from.
fn decode_token(token: &str) -> Result<serde_json::Value, BrowseError> {
    let bad = |why: &str| BrowseError::BadToken(why.to_owned());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad("not base64url"))?;
    match serde_json::from_slice(&bytes) {
        Ok(key @ serde_json::Value::Object(_)) => Ok(key),
        _ => Err(bad("not a key")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DynamoDbConfig;

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let key = serde_json::json!({"id": {"S": "item-7"}});
        assert_eq!(decode_token(&encode_token(&key)), Ok(key));
        assert!(matches!(decode_token("!!"), Err(BrowseError::BadToken(_))));
        let not_a_key = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("[1]");
        assert!(matches!(
            decode_token(&not_a_key),
            Err(BrowseError::BadToken(_))
        ));
    }

    #[tokio::test]
    async fn a_table_is_listed_and_read_page_by_page() {
        let dir = tempfile::tempdir().unwrap();
        let config = DynamoDbConfig {
            enabled: true,
            ..DynamoDbConfig::default()
        };
        let db = DynamoDb::start(&config, dir.path(), Vec::new())
            .unwrap()
            .unwrap();
        {
            let engine = db.engine.lock().await;
            let engine = engine.as_ref().unwrap();
            engine
                .read(|db| {
                    let create = serde_json::from_value(serde_json::json!({
                        "TableName": "things",
                        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
                        "BillingMode": "PAY_PER_REQUEST",
                    }))
                    .unwrap();
                    db.create_table(create).unwrap();
                    for i in 0..5 {
                        let put = serde_json::from_value(serde_json::json!({
                            "TableName": "things",
                            "Item": {"id": {"S": format!("item-{i}")}, "n": {"N": i.to_string()}},
                        }))
                        .unwrap();
                        db.put_item(put).unwrap();
                    }
                })
                .await
                .unwrap();
        }
        let tables = db.table_summaries().await.unwrap();
        assert_eq!(tables.len(), 1);
        assert_eq!(tables[0].name, "things");
        assert_eq!(tables[0].item_count, 5);
        assert_eq!(tables[0].partition_key.as_deref(), Some("id"));
        assert_eq!(tables[0].sort_key, None);

        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = db.items_page("things", 2, start.as_deref()).await.unwrap();
            sizes.push(page.items.len());
            seen.extend(page.items.iter().map(|i| i["id"]["S"].clone()));
            match page.next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        assert_eq!(sizes, [2, 2, 1]);
        seen.sort_by_key(|v| v.to_string());
        seen.dedup();
        assert_eq!(seen.len(), 5, "every item once: {seen:?}");
        let all = db.items_page("things", 5, None).await.unwrap();
        assert_eq!(
            (all.items.len(), all.next),
            (5, None),
            "no empty page after the last"
        );

        assert_eq!(
            db.items_page("nothing", 2, None).await,
            Err(BrowseError::NoTable("nothing".into()))
        );
        let foreign = encode_token(&serde_json::json!({"other": {"S": "x"}}));
        assert!(matches!(
            db.items_page("things", 2, Some(&foreign)).await,
            Err(BrowseError::BadToken(_))
        ));
        db.stop().await;
        assert_eq!(db.table_summaries().await, Err(BrowseError::Stopped));
    }
}
