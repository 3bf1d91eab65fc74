//! Every SQL statement about products: lookups, filtered keyset pages, counts and writes.
//!
//! Reads cost one statement each whatever their size; bulk writes cost a constant number of
//! statements (one multi-row INSERT, one UPDATE ... CASE) instead of one per item.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{
    Alias, CaseStatement, Expr, ExprTrait, LikeExpr, Query, SelectStatement, UnionType,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, FromQueryResult, IntoActiveModel,
    Iterable, Order, QueryFilter, QueryOrder, QuerySelect, Set,
};

use super::clock::now;
use super::pagination::{Cursor, PageSize, ProductOrder};
use super::search_key::search_key;
use super::{Price, ProductName, categories, find_by_ids};
use crate::entities::{category, product};
use crate::error::{ApiError, ApiResult};

/// Which products a list holds. Every field narrows the list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProductFilter {
    pub category_id: Option<i32>,
    pub min_price: Option<Price>,
    pub max_price: Option<Price>,
    /// Case-insensitive substring of the product's name or of its category's name.
    pub search: Option<String>,
}

pub struct NewProduct {
    pub name: ProductName,
    pub price: Price,
    pub category_id: i32,
}

#[derive(Default)]
pub struct ProductChanges {
    pub name: Option<ProductName>,
    pub price: Option<Price>,
    pub category_id: Option<i32>,
}

/// A product write: the product, and the category it was in before and is in after (none
/// before a creation, none after a deletion). Both categories matter to the cache.
pub struct ProductWrite {
    pub before_category_id: Option<i32>,
    pub after_category_id: Option<i32>,
    /// The product as written; for a deletion, as it was.
    pub product: product::Model,
}

impl ProductWrite {
    /// A new product: it was in no category before.
    pub fn created(product: product::Model) -> Self {
        Self {
            before_category_id: None,
            after_category_id: Some(product.category_id),
            product,
        }
    }

    /// A changed product, which was in `before_category_id`.
    pub fn updated(before_category_id: Option<i32>, product: product::Model) -> Self {
        Self {
            before_category_id,
            after_category_id: Some(product.category_id),
            product,
        }
    }

    /// A removed product, as it was: it is in no category after.
    pub fn deleted(product: product::Model) -> Self {
        Self {
            before_category_id: Some(product.category_id),
            after_category_id: None,
            product,
        }
    }
}

fn like_pattern(search: &str) -> LikeExpr {
    let mut escaped = String::with_capacity(search.len() + 2);
    escaped.push('%');
    for character in search_key(search).chars() {
        if matches!(character, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped.push('%');
    LikeExpr::new(escaped).escape('\\')
}

fn filter_condition(filter: &ProductFilter) -> Condition {
    let mut condition = Condition::all();
    if let Some(category_id) = filter.category_id {
        condition = condition.add(product::Column::CategoryId.eq(category_id));
    }
    if let Some(min) = filter.min_price {
        condition = condition.add(product::Column::PriceCents.gte(min.cents()));
    }
    if let Some(max) = filter.max_price {
        condition = condition.add(product::Column::PriceCents.lte(max.cents()));
    }
    if let Some(search) = filter.search.as_deref().filter(|search| !search.is_empty()) {
        // Two index-friendly halves joined by UNION: an OR across the two tables would make
        // PostgreSQL walk the whole primary key instead of using the trigram indexes.
        let matching_categories = ids_named_like(
            category::Entity,
            category::Column::Id,
            category::Column::NameSearch,
            search,
        );
        let by_category = Query::select()
            .column(product::Column::Id)
            .from(product::Entity)
            .and_where(product::Column::CategoryId.in_subquery(matching_categories))
            .to_owned();
        let matching_products = ids_named_like(
            product::Entity,
            product::Column::Id,
            product::Column::NameSearch,
            search,
        )
        .union(UnionType::All, by_category)
        .to_owned();
        condition = condition
            .add(Expr::col((product::Entity, product::Column::Id)).in_subquery(matching_products));
    }
    condition
}

/// `SELECT id FROM table WHERE name_search LIKE '%key%'`: one half of a search, comparing
/// search keys (`search_key`), which the trigram index on `name_search` answers on PostgreSQL.
fn ids_named_like<C: ColumnTrait>(
    table: impl EntityTrait,
    id: C,
    name_search: C,
    search: &str,
) -> SelectStatement {
    Query::select()
        .column(id)
        .from(table)
        .and_where(Expr::col(name_search).like(like_pattern(search)))
        .to_owned()
}

/// The sort key a cursor carries for `order`.
pub fn sort_key(order: ProductOrder, product: &product::Model) -> i64 {
    match order {
        ProductOrder::IdAsc => 0,
        ProductOrder::PriceAsc | ProductOrder::PriceDesc => product.price_cents,
        ProductOrder::NewestFirst => product.created_at.timestamp_micros(),
    }
}

fn after_condition(cursor: Cursor) -> ApiResult<Expr> {
    let id = Expr::col((product::Entity, product::Column::Id));
    let tuple = |column: product::Column, key: Expr| {
        (
            Expr::tuple([Expr::col((product::Entity, column)), id.clone()]),
            Expr::tuple([key, Expr::val(cursor.id)]),
        )
    };
    Ok(match cursor.order {
        ProductOrder::IdAsc => id.gt(cursor.id),
        ProductOrder::PriceAsc => {
            let (columns, values) = tuple(product::Column::PriceCents, Expr::val(cursor.key));
            columns.gt(values)
        }
        ProductOrder::PriceDesc => {
            let (columns, values) = tuple(product::Column::PriceCents, Expr::val(cursor.key));
            columns.lt(values)
        }
        ProductOrder::NewestFirst => {
            let created_at = DateTime::<Utc>::from_timestamp_micros(cursor.key)
                .ok_or_else(|| ApiError::bad_input("malformed cursor"))?;
            let (columns, values) = tuple(product::Column::CreatedAt, Expr::val(created_at));
            columns.lt(values)
        }
    })
}

/// One page of a filtered list: `size + 1` rows, so the caller knows whether another page follows.
pub async fn list_page<C: ConnectionTrait>(
    db: &C,
    filter: &ProductFilter,
    order: ProductOrder,
    size: PageSize,
    after: Option<Cursor>,
) -> ApiResult<Vec<product::Model>> {
    let mut select = product::Entity::find().filter(filter_condition(filter));
    if let Some(cursor) = after {
        select = select.filter(after_condition(cursor)?);
    }
    select = match order {
        ProductOrder::IdAsc => select.order_by(product::Column::Id, Order::Asc),
        ProductOrder::PriceAsc => select
            .order_by(product::Column::PriceCents, Order::Asc)
            .order_by(product::Column::Id, Order::Asc),
        ProductOrder::PriceDesc => select
            .order_by(product::Column::PriceCents, Order::Desc)
            .order_by(product::Column::Id, Order::Desc),
        ProductOrder::NewestFirst => select
            .order_by(product::Column::CreatedAt, Order::Desc)
            .order_by(product::Column::Id, Order::Desc),
    };
    Ok(select.limit(size.get() + 1).all(db).await?)
}

pub async fn count<C: ConnectionTrait>(db: &C, filter: &ProductFilter) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    product::Entity::find()
        .filter(filter_condition(filter))
        .count(db)
        .await
}

#[derive(FromQueryResult)]
struct CategoryCount {
    category_id: i32,
    product_count: i64,
}

/// Product counts of many categories in one statement; categories with none are absent.
pub async fn count_by_categories<C: ConnectionTrait>(
    db: &C,
    category_ids: &[i32],
) -> Result<HashMap<i32, u64>, DbErr> {
    if category_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = product::Entity::find()
        .select_only()
        .column(product::Column::CategoryId)
        .column_as(product::Column::Id.count(), "product_count")
        .filter(product::Column::CategoryId.is_in(category_ids.iter().copied()))
        .group_by(product::Column::CategoryId)
        .into_model::<CategoryCount>()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.category_id, row.product_count.clamp(0, i64::MAX) as u64))
        .collect())
}

/// The first `size + 1` products (by id, after `after_id`) of each category, in one statement:
/// a window function numbers each category's rows so every category gets its own page.
pub async fn pages_by_category<C: ConnectionTrait>(
    db: &C,
    category_ids: &[i32],
    size: PageSize,
    after_id: Option<i32>,
) -> Result<Vec<product::Model>, DbErr> {
    if category_ids.is_empty() {
        return Ok(Vec::new());
    }
    // Every column of the row, so that the page maps onto `product::Model`.
    let columns = || product::Column::iter();
    let mut numbered = Query::select();
    numbered
        .columns(columns())
        .expr_as(
            Expr::cust("ROW_NUMBER() OVER (PARTITION BY category_id ORDER BY id)"),
            Alias::new("row_number"),
        )
        .from(product::Entity)
        .and_where(product::Column::CategoryId.is_in(category_ids.iter().copied()));
    if let Some(after_id) = after_id {
        numbered.and_where(product::Column::Id.gt(after_id));
    }
    let page = Query::select()
        .columns(columns())
        .from_subquery(numbered.to_owned(), Alias::new("numbered"))
        .and_where(Expr::col(Alias::new("row_number")).lte(size.get() as i64 + 1))
        .order_by(product::Column::CategoryId, Order::Asc)
        .order_by(product::Column::Id, Order::Asc)
        .to_owned();
    product::Model::find_by_statement(db.get_database_backend().build(&page))
        .all(db)
        .await
}

async fn require_categories<C: ConnectionTrait>(
    db: &C,
    ids: impl IntoIterator<Item = i32>,
) -> ApiResult<()> {
    let wanted: BTreeSet<i32> = ids.into_iter().collect();
    let found = categories::existing_ids(db, &wanted.iter().copied().collect::<Vec<_>>()).await?;
    let missing: Vec<String> = wanted.difference(&found).map(i32::to_string).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!(
            "unknown category id(s): {}",
            missing.join(", ")
        )))
    }
}

pub async fn create<C: ConnectionTrait>(db: &C, new: NewProduct) -> ApiResult<ProductWrite> {
    create_many(db, vec![new])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("insert returned no row".into()))
}

/// Inserts all products or none: one category check and one multi-row INSERT.
pub async fn create_many<C: ConnectionTrait>(
    db: &C,
    products: Vec<NewProduct>,
) -> ApiResult<Vec<ProductWrite>> {
    if products.is_empty() {
        return Ok(Vec::new());
    }
    require_categories(db, products.iter().map(|new| new.category_id)).await?;
    let now = now();
    let rows = products.into_iter().map(|new| product::ActiveModel {
        name_search: Set(search_key(new.name.as_str())),
        name: Set(new.name.into_inner()),
        price_cents: Set(new.price.cents()),
        category_id: Set(new.category_id),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    });
    let created = product::Entity::insert_many(rows)
        .exec_with_returning(db)
        .await?;
    Ok(created.into_iter().map(ProductWrite::created).collect())
}

pub async fn update<C: ConnectionTrait>(
    db: &C,
    id: i32,
    changes: ProductChanges,
) -> ApiResult<ProductWrite> {
    let existing = product::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("product {id} does not exist")))?;
    if let Some(category_id) = changes.category_id
        && category_id != existing.category_id
    {
        require_categories(db, [category_id]).await?;
    }
    let before_category_id = Some(existing.category_id);
    let mut active = existing.into_active_model();
    if let Some(name) = changes.name {
        active.name_search = Set(search_key(name.as_str()));
        active.name = Set(name.into_inner());
    }
    if let Some(price) = changes.price {
        active.price_cents = Set(price.cents());
    }
    if let Some(category_id) = changes.category_id {
        active.category_id = Set(category_id);
    }
    active.updated_at = Set(now());
    let product = product::Entity::update(active).exec(db).await?;
    Ok(ProductWrite::updated(before_category_id, product))
}

pub async fn delete<C: ConnectionTrait>(db: &C, id: i32) -> ApiResult<ProductWrite> {
    let existing = product::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("product {id} does not exist")))?;
    // A concurrent delete may have removed the row since it was read: only the statement that
    // removed it reports success.
    let deleted = product::Entity::delete_by_id(id).exec(db).await?;
    if deleted.rows_affected == 0 {
        return Err(ApiError::NotFound(format!("product {id} does not exist")));
    }
    Ok(ProductWrite::deleted(existing))
}

/// Sets many prices at once: one SELECT to check the ids, one UPDATE ... CASE, one SELECT back.
/// Answers in the order of `updates`; an id given twice is refused (BAD_USER_INPUT) rather
/// than resolved by position, since two prices for one product in one call is a client bug.
pub async fn update_prices<C: ConnectionTrait>(
    db: &C,
    updates: Vec<(i32, Price)>,
) -> ApiResult<Vec<ProductWrite>> {
    if updates.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i32> = updates.iter().map(|(id, _)| *id).collect();
    let unique: BTreeSet<i32> = ids.iter().copied().collect();
    if unique.len() != ids.len() {
        return Err(ApiError::bad_input(
            "each product id may appear only once in `updates`",
        ));
    }
    let before: HashMap<i32, i32> = find_by_ids::<product::Entity>(db, &ids)
        .await?
        .into_iter()
        .map(|product| (product.id, product.category_id))
        .collect();
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !before.contains_key(id))
        .map(i32::to_string)
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::NotFound(format!(
            "unknown product id(s): {}",
            missing.join(", ")
        )));
    }
    let mut price_case = CaseStatement::new();
    for (id, price) in updates {
        price_case = price_case.case(product::Column::Id.eq(id), Expr::val(price.cents()));
    }
    let price_case = price_case.finally(Expr::col(product::Column::PriceCents));
    product::Entity::update_many()
        .col_expr(product::Column::PriceCents, price_case.into())
        .col_expr(product::Column::UpdatedAt, Expr::val(now()))
        .filter(product::Column::Id.is_in(ids.iter().copied()))
        .exec(db)
        .await?;
    // The answer follows the order of `updates` (the i-th result answers the i-th update),
    // whatever order the database returns rows in; ids are unique, so each row is taken once.
    let mut updated: HashMap<i32, product::Model> = find_by_ids::<product::Entity>(db, &ids)
        .await?
        .into_iter()
        .map(|product| (product.id, product))
        .collect();
    ids.iter()
        .map(|id| {
            let product = updated.remove(id).ok_or_else(|| {
                ApiError::Internal(format!("product {id} vanished inside its transaction"))
            })?;
            Ok(ProductWrite::updated(before.get(id).copied(), product))
        })
        .collect()
}
