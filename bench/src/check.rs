//! What the server saw: the commands the service and its floor sent, compared as the server's
//! profiler recorded them; what `explain` says of a command; the indexes of `tasks`.

use std::future::Future;

use anyhow::Result;
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Collection, Database};

use crate::floor::{FLOOR_APP, SERVICE_APP};

/// Report lines on the commands named in `names` that each side sent while `work` ran with the
/// server's profiler on, in order and as received (told apart by `appName`), compared after
/// [`normalised`]; and the service's first `find` with a sort, without its session fields.
pub async fn same_commands<W>(
    db: &Database,
    names: &[&str],
    work: W,
) -> Result<(Vec<String>, Option<Document>)>
where
    W: Future<Output = Result<()>>,
{
    if let Err(error) = db.run_command(doc! { "profile": 2 }).await {
        return Ok((
            vec![format!("not checked: `profile` refused ({error})")],
            None,
        ));
    }
    work.await?;
    db.run_command(doc! { "profile": 0 }).await?;
    let entries = db
        .collection::<Document>("system.profile")
        .find(doc! {})
        .await?;
    let entries: Vec<Document> = entries.try_collect().await?;
    let sent = |app: &str| -> Vec<(String, Document)> {
        let mine = entries.iter().filter(|e| e.get_str("appName") == Ok(app));
        let commands = mine.filter_map(|e| e.get_document("command").ok());
        let named = commands.filter_map(|c| Some((c.keys().next()?.clone(), c.clone())));
        named
            .filter(|(name, _)| names.contains(&name.as_str()))
            .collect()
    };
    let (service, floor) = (sent(SERVICE_APP), sent(FLOOR_APP));
    let listed = |side: &[(String, Document)]| {
        let names: Vec<String> = side.iter().map(|(name, _)| format!("`{name}`")).collect();
        names.join(", ")
    };
    let mut lines = vec![format!(
        "service sent {}; floor sent {}",
        listed(&service),
        listed(&floor)
    )];
    if service.is_empty() || floor.is_empty() {
        lines.push("not compared: this server's `system.profile` holds no such entry".into());
        return Ok((lines, None));
    }
    for name in names
        .iter()
        .filter(|&&name| !service.iter().chain(&floor).any(|(n, _)| n == name))
    {
        lines.push(format!(
            "`{name}` is in neither side's entries (not sent, or not recorded by this server's \
             `system.profile`), so it is not compared on the wire"
        ));
    }
    let masked = |command: &Document| normalised(&Bson::Document(command.clone()));
    let mut same = service.len() == floor.len();
    for ((name, s), (_, f)) in service.iter().zip(&floor) {
        if masked(s) != masked(f) {
            let (s, f) = (shortened(&masked(s)), shortened(&masked(f)));
            lines.push(format!("`{name}` DIFFERENT: service `{s}`, floor `{f}`"));
            same = false;
        }
    }
    if same {
        lines.push(format!(
            "all {} identical after masking; as received from the service:",
            service.len()
        ));
        let mut shown: Vec<String> = Vec::new();
        for (name, command) in &service {
            let shape = shortened(&masked(command));
            if !shown.contains(&shape) {
                lines.push(format!("  `{name}`: `{shape}`"));
                shown.push(shape);
            }
        }
    }
    let find = service
        .into_iter()
        .find(|(name, c)| name == "find" && c.contains_key("sort"));
    let unsent = |(key, _): &(String, Bson)| !key.starts_with('$') && key != "lsid";
    Ok((
        lines,
        find.map(|(_, command)| command.into_iter().filter(unsent).collect()),
    ))
}

/// A command as the server's profiler recorded it, without what differs between two clients
/// or two requests: session and routing fields are dropped, times become `<date>` and
/// generated ids (task ids, hand-off ids) `<id>`.
pub fn normalised(value: &Bson) -> Bson {
    const SESSION: [&str; 6] = [
        "lsid",
        "$db",
        "$clusterTime",
        "$readPreference",
        "txnNumber",
        "comment",
    ];
    match value {
        Bson::Document(document) => {
            let kept = document
                .iter()
                .filter(|(key, _)| !SESSION.contains(&key.as_str()));
            Bson::Document(
                kept.map(|(key, value)| (key.clone(), normalised(value)))
                    .collect(),
            )
        }
        Bson::Array(values) => Bson::Array(values.iter().map(normalised).collect()),
        Bson::DateTime(_) => Bson::from("<date>"),
        Bson::String(text)
            if text
                .get(..36)
                .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()) =>
        {
            Bson::from("<id>")
        }
        other => other.clone(),
    }
}

/// A command as relaxed extended JSON, arrays of many statements or ids cut to their first
/// element and a count.
fn shortened(command: &Bson) -> String {
    fn cut(value: &Bson) -> Bson {
        match value {
            Bson::Document(doc) => {
                Bson::Document(doc.iter().map(|(k, v)| (k.clone(), cut(v))).collect())
            }
            Bson::Array(values) if values.len() > 3 => {
                let count = Bson::from(format!("... {} in all", values.len()));
                Bson::Array(vec![cut(&values[0]), count])
            }
            Bson::Array(values) => Bson::Array(values.iter().map(cut).collect()),
            other => other.clone(),
        }
    }
    cut(command).into_relaxed_extjson().to_string()
}

/// `listIndexes` of `tasks`: one line per index (name, keys, whether unique).
pub async fn indexes<T: Send + Sync>(tasks: &Collection<T>) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut cursor = tasks.list_indexes().await?;
    while let Some(index) = cursor.try_next().await? {
        let options = index.options.unwrap_or_default();
        let unique = if options.unique == Some(true) {
            " unique"
        } else {
            ""
        };
        let keys = Bson::Document(index.keys).into_relaxed_extjson();
        lines.push(format!(
            "`{}` {keys}{unique}",
            options.name.unwrap_or_default()
        ));
    }
    Ok(lines)
}

/// What the server says about `command` under `explain` (verbosity `executionStats`) in one
/// line: the winning plan's stages, the execution counters and the raw answer (shortened), or
/// its refusal.
pub async fn explain(db: &Database, command: Document) -> String {
    match db
        .run_command(doc! { "explain": command, "verbosity": "executionStats" })
        .await
    {
        Ok(answer) => describe(answer),
        Err(error) => format!("refused: {error}"),
    }
}

/// The stages of an explain plan, outermost first, with the index each one uses.
fn stages(plan: &Document, into: &mut Vec<String>) {
    if let Ok(stage) = plan.get_str("stage") {
        into.push(match plan.get_str("indexName") {
            Ok(index) => format!("{stage}({index})"),
            Err(_) => stage.to_owned(),
        });
    }
    let inputs = plan.get_array("inputStages").into_iter().flatten();
    let inner = ["inputStage", "queryPlan"].map(|key| plan.get_document(key).ok());
    for inner in inner
        .into_iter()
        .flatten()
        .chain(inputs.filter_map(Bson::as_document))
    {
        stages(inner, into);
    }
}

fn describe(answer: Document) -> String {
    // An aggregation's answer holds the query's plan in its first stage, `$cursor`.
    let first = answer
        .get_array("stages")
        .ok()
        .and_then(|s| s.first()?.as_document());
    let cursor = first.and_then(|first| first.get_document("$cursor").ok());
    let query = cursor
        .filter(|_| !answer.contains_key("queryPlanner"))
        .unwrap_or(&answer);
    let mut plan = Vec::new();
    if let Ok(planner) = query.get_document("queryPlanner") {
        planner
            .get_document("winningPlan")
            .map(|w| stages(w, &mut plan))
            .ok();
    }
    let stats = query.get_document("executionStats").ok();
    let keys = [
        "nReturned",
        "totalKeysExamined",
        "totalDocsExamined",
        "executionTimeMillis",
    ];
    let counters = keys.map(|key| Some(format!("{key} {}", stats?.get(key)?)));
    let counters: Vec<String> = counters.into_iter().flatten().collect();
    let mut raw = Bson::Document(answer).into_relaxed_extjson().to_string();
    if raw.len() > 700 {
        raw.truncate(
            (0..=700)
                .rev()
                .find(|&i| raw.is_char_boundary(i))
                .unwrap_or(0),
        );
        raw.push_str("...");
    }
    let plan = if plan.is_empty() {
        "(no winningPlan stages)".into()
    } else {
        plan.join(" <- ")
    };
    let counters = match counters.is_empty() {
        true => "no executionStats".into(),
        false => counters.join(", "),
    };
    format!("plan {plan}; {counters}; raw: `{raw}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_reads_a_find_and_an_aggregation() {
        let plan = doc! { "stage": "FETCH", "inputStage": { "stage": "IXSCAN", "indexName": "i" } };
        let find =
            doc! { "queryPlanner": { "winningPlan": plan }, "executionStats": { "nReturned": 2 } };
        let aggregate = doc! { "stages": [ { "$cursor": find.clone() }, { "$group": {} } ] };
        for answer in [find, aggregate] {
            let line = describe(answer);
            assert!(
                line.starts_with("plan FETCH <- IXSCAN(i); nReturned 2;"),
                "{line}"
            );
        }
    }

    #[test]
    fn commands_are_masked_and_long_arrays_cut() {
        let command = doc! { "updates": [1, 2, 3, 4, 5], "ordered": false, "lsid": 1 };
        let expected = r#"{"updates":[1,"... 5 in all"],"ordered":false}"#;
        assert_eq!(shortened(&normalised(&Bson::Document(command))), expected);
        let id = Bson::from(format!("{}-x", uuid::Uuid::now_v7()));
        assert_eq!(normalised(&id), Bson::from("<id>"));
    }
}
