//! Per-request values every resolver reaches through the GraphQL context.

use async_graphql::Context;
use sea_orm::DatabaseConnection;

use super::loaders::Loaders;
use crate::cache::tags::{Tag, TagRecorder};
use crate::error::ApiError;

pub trait RequestContext {
    fn db(&self) -> Result<&DatabaseConnection, ApiError>;
    fn loaders(&self) -> Result<&Loaders, ApiError>;
    /// Records that the result depends on `tag` (no-op when the request is not cached).
    fn record_tag(&self, tag: Tag);
    fn record_product(&self, product_id: i32, category_id: Option<i32>);
}

impl RequestContext for Context<'_> {
    fn db(&self) -> Result<&DatabaseConnection, ApiError> {
        self.data::<DatabaseConnection>()
            .map_err(|_| ApiError::Internal("no database in the schema data".into()))
    }

    fn loaders(&self) -> Result<&Loaders, ApiError> {
        self.data::<Loaders>()
            .map_err(|_| ApiError::Internal("no DataLoaders in the request data".into()))
    }

    fn record_tag(&self, tag: Tag) {
        if let Some(recorder) = self.data_opt::<std::sync::Arc<TagRecorder>>() {
            recorder.record(tag);
        }
    }

    fn record_product(&self, product_id: i32, category_id: Option<i32>) {
        if let Some(recorder) = self.data_opt::<std::sync::Arc<TagRecorder>>() {
            recorder.record_product(product_id, category_id);
        }
    }
}
