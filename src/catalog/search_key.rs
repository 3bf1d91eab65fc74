//! The form names are searched in, in every language on every backend: Unicode-normalized
//! (NFKC: a Hangul syllable or an accented letter typed decomposed matches the composed one,
//! full-width letters match ASCII) and case-folded beyond ASCII (`Ä` and `ä`, `ΣΟΦΊΑ` and
//! `σοφία`, `İSTANBUL` and `istanbul`, `STRASSE` and `straße`). SQLite's `lower()` folds ASCII
//! only, so each row keeps its name's key beside it (`name_search`), written with the name,
//! and a search compares keys: `name_search LIKE '%' || key(search) || '%'`.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use unicode_normalization::UnicodeNormalization;

use crate::entities::{category, product};

/// The search key of a name or a search text.
pub fn search_key(text: &str) -> String {
    let lowered: String = text.nfkc().flat_map(char::to_lowercase).collect();
    let mut key = String::with_capacity(lowered.len());
    let mut characters = lowered.nfkc().peekable();
    while let Some(character) = characters.next() {
        match character {
            // Final sigma is a position, not a letter: `ΟΔΟΣ` lowercases to `οδος`.
            'ς' => key.push('σ'),
            'ß' => key.push_str("ss"),
            // Turkish: `İ` lowercases to `i` + a combining dot; `ı` is searched as `i`.
            'i' if characters.peek() == Some(&'\u{307}') => {
                characters.next();
                key.push('i');
            }
            'ı' => key.push('i'),
            other => key.push(other),
        }
    }
    key
}

/// Rows written before `name_search` existed get their keys, a batch at a time in id order:
/// run at start-up, after the migrations (two short reads once every row has one).
pub async fn backfill<C: ConnectionTrait>(db: &C) -> Result<u64, DbErr> {
    let mut filled = 0;
    let mut after = i32::MIN;
    loop {
        let rows: Vec<(i32, String)> = product::Entity::find()
            .select_only()
            .column(product::Column::Id)
            .column(product::Column::Name)
            .filter(product::Column::NameSearch.eq(""))
            .filter(product::Column::Id.gt(after))
            .order_by_asc(product::Column::Id)
            .limit(BATCH)
            .into_tuple()
            .all(db)
            .await?;
        let Some((last, _)) = rows.last() else { break };
        after = *last;
        for (id, name) in &rows {
            let update = Query::update()
                .table(product::Entity)
                .value(product::Column::NameSearch, search_key(name))
                .and_where(Expr::col(product::Column::Id).eq(*id))
                .to_owned();
            db.execute(&update).await?;
        }
        filled += rows.len() as u64;
    }
    // Categories are few: one read.
    let rows: Vec<(i32, String)> = category::Entity::find()
        .select_only()
        .column(category::Column::Id)
        .column(category::Column::Name)
        .filter(category::Column::NameSearch.eq(""))
        .into_tuple()
        .all(db)
        .await?;
    for (id, name) in &rows {
        let update = Query::update()
            .table(category::Entity)
            .value(category::Column::NameSearch, search_key(name))
            .and_where(Expr::col(category::Column::Id).eq(*id))
            .to_owned();
        db.execute(&update).await?;
    }
    Ok(filled + rows.len() as u64)
}

const BATCH: u64 = 1_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn finds(name: &str, search: &str) -> bool {
        search_key(name).contains(&search_key(search))
    }

    #[test]
    fn searches_fold_case_and_normalize_in_every_language() {
        // German
        assert!(finds("Äpfel Grün", "äpfel grün"));
        assert!(finds("Äpfel Grün", "ÄPFEL"));
        assert!(finds("Straße", "STRASSE"));
        // Turkish
        assert!(finds("İSTANBUL Çayı", "istanbul çayı"));
        assert!(finds("Irmak", "ırmak"));
        // Greek: final sigma, accents kept
        assert!(finds("ΣΟΦΊΑ ΟΔΟΣ", "σοφία οδος"));
        assert!(finds("Οδός", "ΟΔΌΣ"));
        // Korean typed decomposed (jamo) finds the composed name
        let decomposed: String = "한국어".nfd().collect();
        assert_ne!(decomposed, "한국어");
        assert!(finds("한국어 사전", &decomposed));
        assert!(finds(&decomposed, "한국"));
        // An accented letter typed decomposed; full-width letters
        assert!(finds("Café", "cafe\u{301}"));
        assert!(finds("ＡＢＣ Lamp", "abc"));
        // Unrelated text does not match
        assert!(!finds("Äpfel", "apfel"));
    }
}
