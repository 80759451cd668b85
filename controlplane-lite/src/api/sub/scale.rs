//! `GET {deployments,replicasets}/{name}/scale`: the `autoscaling/v1` Scale view
//! ([`crate::admission::scale_of`]); PUT and PATCH of it go through the write path.

use crate::admission;
use crate::api::Api;
use crate::request::{ApiResult, Target};
use crate::web::{self, Body};
use http::{Response, StatusCode};

impl Api {
    pub(in crate::api) async fn get_scale(&self, t: &Target) -> ApiResult<Response<Body>> {
        let name = t.name.clone().unwrap_or_default();
        let (obj, _) = self.get_obj(t.res, &Self::ns_of(t), &name).await?;
        Ok(web::json(StatusCode::OK, &admission::scale_of(t.res, &obj)))
    }
}
