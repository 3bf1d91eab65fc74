//! All DataLoaders, created per request in one function so each request batches and
//! de-duplicates its own lookups: a list of any size costs a constant number of statements.
//! Each batch is a `dataloader.batch` span in traces, a child of the request that started it.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr, EntityTrait};
use tracing::Instrument;

use crate::catalog::{PageSize, Row, find_by_ids, products};
use crate::entities::{category, product};

pub type LoadError = Arc<DbErr>;

/// Rows of one entity by id: `CategoryLoader`, `ProductLoader`.
pub struct RowLoader<E>(DatabaseConnection, PhantomData<fn() -> E>);

impl<E> RowLoader<E> {
    fn new(db: &DatabaseConnection) -> Self {
        RowLoader(db.clone(), PhantomData)
    }
}

impl<E> Loader<i32> for RowLoader<E>
where
    E: EntityTrait,
    E::Model: Row,
{
    type Value = E::Model;
    type Error = LoadError;

    #[tracing::instrument(
        level = "debug",
        name = "dataloader.batch",
        skip_all,
        fields(loader = E::default().table_name(), keys = ids.len())
    )]
    async fn load(&self, ids: &[i32]) -> Result<HashMap<i32, Self::Value>, Self::Error> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = find_by_ids::<E>(&self.0, ids).await.map_err(Arc::new)?;
        Ok(rows.into_iter().map(|row| (row.id(), row)).collect())
    }
}

pub type CategoryLoader = RowLoader<category::Entity>;
pub type ProductLoader = RowLoader<product::Entity>;

/// `Category.productCount`, keyed by category id.
pub struct ProductCountLoader(DatabaseConnection);

impl Loader<i32> for ProductCountLoader {
    type Value = u64;
    type Error = LoadError;

    #[tracing::instrument(
        level = "debug",
        name = "dataloader.batch",
        skip_all,
        fields(loader = "product_counts", keys = category_ids.len())
    )]
    async fn load(&self, category_ids: &[i32]) -> Result<HashMap<i32, u64>, Self::Error> {
        if category_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let counts = products::count_by_categories(&self.0, category_ids)
            .await
            .map_err(Arc::new)?;
        Ok(category_ids
            .iter()
            .map(|id| (*id, counts.get(id).copied().unwrap_or(0)))
            .collect())
    }
}

/// One page of `Category.products`: categories asking for the same page shape share a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CategoryPageKey {
    pub category_id: i32,
    pub size: PageSize,
    pub after_id: Option<i32>,
}

pub struct CategoryPageLoader(DatabaseConnection);

impl Loader<CategoryPageKey> for CategoryPageLoader {
    type Value = Vec<product::Model>;
    type Error = LoadError;

    #[tracing::instrument(
        level = "debug",
        name = "dataloader.batch",
        skip_all,
        fields(loader = "category_pages", keys = keys.len())
    )]
    async fn load(
        &self,
        keys: &[CategoryPageKey],
    ) -> Result<HashMap<CategoryPageKey, Self::Value>, Self::Error> {
        let mut shapes: HashMap<(PageSize, Option<i32>), Vec<i32>> = HashMap::new();
        for key in keys {
            shapes
                .entry((key.size, key.after_id))
                .or_default()
                .push(key.category_id);
        }
        let mut pages = HashMap::with_capacity(keys.len());
        for ((size, after_id), category_ids) in shapes {
            let rows = products::pages_by_category(&self.0, &category_ids, size, after_id)
                .await
                .map_err(Arc::new)?;
            for category_id in &category_ids {
                pages.insert(
                    CategoryPageKey {
                        category_id: *category_id,
                        size,
                        after_id,
                    },
                    Vec::new(),
                );
            }
            for row in rows {
                if let Some(page) = pages.get_mut(&CategoryPageKey {
                    category_id: row.category_id,
                    size,
                    after_id,
                }) {
                    page.push(row);
                }
            }
        }
        Ok(pages)
    }
}

/// The loaders of one request. Categories and counts keep a per-request cache so that a list
/// resolver that already knows every key (a page of products knows its category ids) can
/// load them in one statement and `feed_many` them: batching then does not depend on every
/// item asking within the loader's batching window (`BATCH_WINDOW`, 200 µs), which a 100-item
/// page can exceed.
pub struct Loaders {
    pub categories: DataLoader<CategoryLoader, HashMapCache>,
    pub products: DataLoader<ProductLoader>,
    pub product_counts: DataLoader<ProductCountLoader, HashMapCache>,
    pub category_pages: DataLoader<CategoryPageLoader>,
}

/// How long a loader waits for more keys before it queries. async-graphql's default (1 ms)
/// was most of the latency of an uncached `product(id)` (two loaders in a row: 2.8 ms); the
/// keys of one request register within microseconds of each other, and the big lists prefetch.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::from_micros(200);

/// Runs a loader's batch as a task in the span of the request that queued its first key, so
/// a trace shows the batch under that request.
fn spawn_in_current_span(batch: BoxFuture<'static, ()>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(batch.instrument(tracing::Span::current()))
}

impl Loaders {
    pub fn new(db: &DatabaseConnection) -> Self {
        Loaders {
            categories: DataLoader::with_cache(
                CategoryLoader::new(db),
                spawn_in_current_span,
                HashMapCache::default(),
            )
            .delay(BATCH_WINDOW),
            products: DataLoader::new(ProductLoader::new(db), spawn_in_current_span)
                .delay(BATCH_WINDOW),
            product_counts: DataLoader::with_cache(
                ProductCountLoader(db.clone()),
                spawn_in_current_span,
                HashMapCache::default(),
            )
            .delay(BATCH_WINDOW),
            category_pages: DataLoader::new(CategoryPageLoader(db.clone()), spawn_in_current_span)
                .delay(BATCH_WINDOW),
        }
    }
}

/// Loads the categories of a page of products at once, when the query selects them.
#[tracing::instrument(
    level = "debug",
    name = "dataloader.prefetch",
    skip_all,
    fields(loader = "category", keys = products.len())
)]
pub async fn prefetch_categories(
    loaders: &Loaders,
    db: &DatabaseConnection,
    products: &[product::Model],
) -> Result<(), DbErr> {
    let mut ids: Vec<i32> = products.iter().map(|product| product.category_id).collect();
    ids.sort_unstable();
    ids.dedup();
    let found = find_by_ids::<category::Entity>(db, &ids).await?;
    loaders
        .categories
        .feed_many(found.into_iter().map(|category| (category.id, category)))
        .await;
    Ok(())
}

/// Counts the products of many categories at once, when the query selects `productCount`.
#[tracing::instrument(
    level = "debug",
    name = "dataloader.prefetch",
    skip_all,
    fields(loader = "product_counts", keys = category_ids.len())
)]
pub async fn prefetch_product_counts(
    loaders: &Loaders,
    db: &DatabaseConnection,
    category_ids: &[i32],
) -> Result<(), DbErr> {
    let counts = products::count_by_categories(db, category_ids).await?;
    loaders
        .product_counts
        .feed_many(
            category_ids
                .iter()
                .map(|id| (*id, counts.get(id).copied().unwrap_or(0))),
        )
        .await;
    Ok(())
}
