//! Objects in an S3-compatible bucket (AWS S3, R2, MinIO, Garage, SeaweedFS, Ceph RGW).
//!
//! rusty-s3 builds and presigns every request (SigV4, query authentication with an unsigned
//! payload, so bodies stream); reqwest sends them. Objects live under `<prefix><key>`. An
//! upload buffers at most one part in memory: a file that fits in one part is sent with a
//! single PUT when it is committed, a larger one goes up as a multipart upload, part by part
//! while it arrives, and is completed when it is committed.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use reqwest::{Method, Response, StatusCode};
use rusty_s3::actions::{
    AbortMultipartUpload, CompleteMultipartUpload, CreateMultipartUpload, DeleteObject, GetObject,
    ListObjectsV2, PutObject, UploadPart,
};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use url::Url;

use super::{ObjectBody, StoreError, SweepReport};

/// How long a presigned request the service sends itself stays valid: it is sent at once.
const REQUEST_VALIDITY: Duration = Duration::from_secs(15 * 60);
/// The longest validity S3 accepts for a presigned URL.
const MAX_PRESIGN_SECS: i64 = 7 * 24 * 3600;
/// Smallest part S3 accepts (except the last); ours are at least this.
const MIN_PART: usize = 8 * 1024 * 1024;
/// A buffer grows as it likes up to this; past it, it is given a whole part's capacity.
const SMALL_BUFFER: usize = 256 * 1024;
/// Most parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;
/// Name of the small object the health check and the start-up check write, under the prefix.
pub const PROBE_OBJECT: &str = ".chatfiles-probe";
/// Time to connect to the store, and longest pause while a response is read.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a request other than a download may take in all, sending its body included (a
/// store that stops reading would otherwise hold an upload forever).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a listing's `url` points with S3 storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Downloads {
    // A presigned URL straight to the store (plain comments: doc comments would turn clap's
    // help into its long layout).
    Direct,
    // Our own `/files/{key}`, the bytes streamed from the store.
    Proxy,
}

impl Downloads {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Proxy => "proxy",
        }
    }
}

/// The credentials, from the standard AWS variables.
#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: Option<SecretString>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// What `--object-store s3://…` and the `--s3-*` flags say.
#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    /// Empty, or ends with `/`.
    pub prefix: String,
    /// Where the service sends its requests.
    pub endpoint: Url,
    /// The host in direct download URLs (SigV4 signs the host).
    pub public_endpoint: Url,
    pub region: String,
    pub path_style: bool,
    pub downloads: Downloads,
    /// `None` until read from the environment.
    pub credentials: Option<S3Credentials>,
}

impl S3Settings {
    /// `s3://bucket/prefix/`, for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }
}

/// A bucket (and prefix) the service keeps its objects in.
#[derive(Clone)]
pub struct S3Store {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    bucket: Bucket,
    /// The same bucket as clients reach it, for presigned downloads.
    public: Bucket,
    credentials: Credentials,
    prefix: String,
    location: String,
    endpoint: String,
    downloads: Downloads,
    client: reqwest::Client,
    part_size: usize,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("location", &self.inner.location)
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

/// An answer of the store that was not a success, as its XML error body tells.
#[derive(Debug)]
struct S3Failure {
    status: StatusCode,
    code: String,
    message: String,
}

impl fmt::Display for S3Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status.as_u16())?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl S3Failure {
    fn into_error(self) -> StoreError {
        match (self.status, self.code.as_str()) {
            (StatusCode::NOT_FOUND, "NoSuchKey" | "") => StoreError::NotFound,
            (StatusCode::NOT_FOUND, "NoSuchBucket") => {
                StoreError::Unavailable(format!("the bucket does not exist ({self})"))
            }
            (
                StatusCode::FORBIDDEN,
                "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied" | "",
            ) => StoreError::Unavailable(format!(
                "the store refused the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): {self}"
            )),
            (status, _) if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS => {
                StoreError::Unavailable(self.to_string())
            }
            _ => StoreError::Other(anyhow::anyhow!("the object store answered {self}")),
        }
    }
}

/// A transport failure with its causes, without the URL (it carries a signature).
fn transport(err: reqwest::Error) -> StoreError {
    let err = err.without_url();
    let mut message = format!("no answer ({err}");
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message.push(')');
    StoreError::Unavailable(message)
}

/// The text of the first `<tag>` in `xml`, or of every `<tag>` inside each `<record>`.
mod xml {
    use quick_xml::Reader;
    use quick_xml::events::Event;

    /// The leaf elements named in `fields`, for each `record` element, in order.
    pub fn records(xml: &str, record: &str, fields: &[&str]) -> Vec<Vec<String>> {
        let mut reader = Reader::from_str(xml);
        let mut out = Vec::new();
        let mut current: Option<Vec<String>> = None;
        let mut field: Option<usize> = None;
        loop {
            match reader.read_event() {
                Ok(Event::Start(start)) => {
                    let name = start.local_name();
                    let name = name.as_ref();
                    if name == record.as_bytes() {
                        current = Some(vec![String::new(); fields.len()]);
                    } else if current.is_some() {
                        field = fields.iter().position(|f| f.as_bytes() == name);
                    }
                }
                Ok(Event::Text(text)) => {
                    if let (Some(values), Some(at)) = (current.as_mut(), field) {
                        values[at].push_str(&text.decode().unwrap_or_default());
                    }
                }
                Ok(Event::GeneralRef(entity)) => {
                    if let (Some(values), Some(at)) = (current.as_mut(), field) {
                        let decoded = match entity.decode().unwrap_or_default().as_ref() {
                            "amp" => "&",
                            "lt" => "<",
                            "gt" => ">",
                            "quot" => "\"",
                            "apos" => "'",
                            _ => "",
                        };
                        values[at].push_str(decoded);
                    }
                }
                Ok(Event::End(end)) => {
                    if end.local_name().as_ref() == record.as_bytes() {
                        out.extend(current.take());
                    }
                    field = None;
                }
                Ok(Event::Eof) | Err(_) => return out,
                Ok(_) => {}
            }
        }
    }

    /// The text of the first element called `tag`, anywhere.
    pub fn text(xml: &str, tag: &str) -> Option<String> {
        let mut reader = Reader::from_str(xml);
        let mut inside = false;
        let mut value = String::new();
        loop {
            match reader.read_event() {
                Ok(Event::Start(start)) => inside = start.local_name().as_ref() == tag.as_bytes(),
                Ok(Event::Text(text)) if inside => {
                    value.push_str(&text.decode().unwrap_or_default());
                }
                Ok(Event::End(_)) if inside => return Some(value),
                Ok(Event::Eof) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }
}

/// An object listed in the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name under the prefix.
    pub name: String,
    pub size: u64,
}

/// A multipart upload begun and neither completed nor aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub name: String,
    pub upload_id: String,
}

impl S3Store {
    /// A store for `settings`; nothing is sent yet. Parts are sized so that a file of
    /// `max_file_size` takes at most 10,000 of them.
    pub fn new(settings: &S3Settings, max_file_size: u64) -> Result<Self, StoreError> {
        let style = if settings.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket_at = |endpoint: &Url| {
            Bucket::new(
                endpoint.clone(),
                style,
                settings.bucket.clone(),
                settings.region.clone(),
            )
            .map_err(|e| StoreError::Other(anyhow::anyhow!("bucket {}: {e}", settings.bucket)))
        };
        let credentials = settings.credentials.as_ref().ok_or_else(|| {
            StoreError::Other(anyhow::anyhow!(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set for {}",
                settings.location()
            ))
        })?;
        let credentials = match &credentials.session_token {
            Some(token) => Credentials::new_with_token(
                credentials.access_key_id.clone(),
                credentials.secret_access_key.expose_secret().to_owned(),
                token.expose_secret().to_owned(),
            ),
            None => Credentials::new(
                credentials.access_key_id.clone(),
                credentials.secret_access_key.expose_secret().to_owned(),
            ),
        };
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .build()
            .map_err(|e| StoreError::Other(anyhow::anyhow!("cannot build an HTTP client: {e}")))?;
        let per_part = max_file_size.div_ceil(MAX_PARTS);
        let part_size = usize::try_from(per_part)
            .unwrap_or(usize::MAX)
            .max(MIN_PART);
        Ok(Self {
            inner: std::sync::Arc::new(Inner {
                bucket: bucket_at(&settings.endpoint)?,
                public: bucket_at(&settings.public_endpoint)?,
                credentials,
                prefix: settings.prefix.clone(),
                location: settings.location(),
                endpoint: settings.endpoint.as_str().trim_end_matches('/').to_owned(),
                downloads: settings.downloads,
                client,
                part_size,
            }),
        })
    }

    /// `s3://bucket/prefix/ at <endpoint>`, for logs.
    pub fn describe(&self) -> String {
        format!("{} at {}", self.inner.location, self.inner.endpoint)
    }

    fn name(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    fn credentials(&self) -> Option<&Credentials> {
        Some(&self.inner.credentials)
    }

    /// Sends `method` to `url` (already presigned), with `headers` (those that were signed)
    /// and `body`; a non-success answer becomes an error.
    async fn send(
        &self,
        method: Method,
        url: Url,
        headers: &[(&str, &str)],
        body: Option<reqwest::Body>,
    ) -> Result<Response, StoreError> {
        // A download's body may take long to read; its stalls are bounded by READ_TIMEOUT.
        let timeout = (method != Method::GET).then_some(REQUEST_TIMEOUT);
        let mut request = self.inner.client.request(method, url);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(transport)?;
        if response.status().is_success() || response.status() == StatusCode::PARTIAL_CONTENT {
            return Ok(response);
        }
        Err(failure(response).await.into_error())
    }

    /// The body of a GET (a listing's XML).
    async fn get_text(&self, url: Url) -> Result<String, StoreError> {
        self.send(Method::GET, url, &[], None)
            .await?
            .text()
            .await
            .map_err(transport)
    }

    /// Stores `bytes` as one object.
    async fn put(&self, key: &str, content_type: &str, bytes: Bytes) -> Result<(), StoreError> {
        let name = self.name(key);
        let mut action = PutObject::new(&self.inner.bucket, self.credentials(), &name);
        action.headers_mut().insert("content-type", content_type);
        let url = action.sign(REQUEST_VALIDITY);
        self.send(
            Method::PUT,
            url,
            &[("content-type", content_type)],
            Some(bytes.into()),
        )
        .await?;
        Ok(())
    }

    async fn create_multipart(&self, key: &str, content_type: &str) -> Result<String, StoreError> {
        let name = self.name(key);
        let mut action = CreateMultipartUpload::new(&self.inner.bucket, self.credentials(), &name);
        action.headers_mut().insert("content-type", content_type);
        let url = action.sign(REQUEST_VALIDITY);
        let response = self
            .send(Method::POST, url, &[("content-type", content_type)], None)
            .await?;
        let body = response.text().await.map_err(transport)?;
        xml::text(&body, "UploadId")
            .filter(|id| !id.is_empty())
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("CreateMultipartUpload: no UploadId")))
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        bytes: Bytes,
    ) -> Result<String, StoreError> {
        let name = self.name(key);
        let action = UploadPart::new(
            &self.inner.bucket,
            self.credentials(),
            &name,
            number,
            upload_id,
        );
        let url = action.sign(REQUEST_VALIDITY);
        let response = self.send(Method::PUT, url, &[], Some(bytes.into())).await?;
        response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Other(anyhow::anyhow!("UploadPart: no ETag")))
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<(), StoreError> {
        let name = self.name(key);
        let action = CompleteMultipartUpload::new(
            &self.inner.bucket,
            self.credentials(),
            &name,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(REQUEST_VALIDITY);
        let response = self
            .send(Method::POST, url, &[], Some(action.body().into()))
            .await?;
        // A 200 may still carry an error, when the store failed after it started answering.
        let body = response.text().await.map_err(transport)?;
        if let Some(code) = xml::text(&body, "Code") {
            return Err(StoreError::Unavailable(format!(
                "CompleteMultipartUpload failed: {code}"
            )));
        }
        Ok(())
    }

    async fn abort_multipart(&self, name: &str, upload_id: &str) -> Result<(), StoreError> {
        let action =
            AbortMultipartUpload::new(&self.inner.bucket, self.credentials(), name, upload_id);
        let url = action.sign(REQUEST_VALIDITY);
        match self.send(Method::DELETE, url, &[], None).await {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Reads `len` bytes from `start` of an object of `size` bytes.
    pub async fn read(
        &self,
        key: &str,
        start: u64,
        len: u64,
        size: u64,
    ) -> Result<ObjectBody, StoreError> {
        let name = self.name(key);
        let url =
            GetObject::new(&self.inner.bucket, self.credentials(), &name).sign(REQUEST_VALIDITY);
        let range = (len < size).then(|| format!("bytes={start}-{}", start + len - 1));
        let headers: Vec<(&str, &str)> = range.iter().map(|r| ("range", r.as_str())).collect();
        let response = self.send(Method::GET, url, &headers, None).await?;
        if response.content_length() != Some(len) {
            return Err(StoreError::Other(anyhow::anyhow!(
                "object {key} answered {:?} bytes where {len} were asked for ({size} in the database)",
                response.content_length()
            )));
        }
        Ok(ObjectBody::Stream(
            response
                .bytes_stream()
                .map_err(|e| std::io::Error::other(e.without_url()))
                .boxed(),
        ))
    }

    /// Removes an object; a missing object is not an error.
    pub async fn remove(&self, key: &str) -> Result<(), StoreError> {
        let name = self.name(key);
        let url =
            DeleteObject::new(&self.inner.bucket, self.credentials(), &name).sign(REQUEST_VALIDITY);
        match self.send(Method::DELETE, url, &[], None).await {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// A presigned GET of the object for clients, when downloads go direct: valid until
    /// `expires`, with the type and disposition the store is to answer with signed in.
    ///
    /// The signing time is a function of `expires` alone (a minute and the TTL before it,
    /// never after now), so that every listing with the same expiry hands out the same URL.
    pub fn direct_url(
        &self,
        key: &str,
        content_type: &str,
        disposition: &str,
        expires: i64,
        ttl_secs: u64,
    ) -> Option<String> {
        if self.inner.downloads != Downloads::Direct {
            return None;
        }
        let ttl = i64::try_from(ttl_secs).unwrap_or(MAX_PRESIGN_SECS);
        let signed_at = expires.saturating_sub(ttl).saturating_sub(60);
        let valid_for = expires.saturating_sub(signed_at).clamp(1, MAX_PRESIGN_SECS);
        let time = Timestamp::from_second(signed_at).ok()?;
        let name = self.name(key);
        let mut action = GetObject::new(&self.inner.public, self.credentials(), &name);
        action
            .query_mut()
            .insert("response-content-disposition", disposition);
        action
            .query_mut()
            .insert("response-content-type", content_type);
        let valid_for = Duration::from_secs(u64::try_from(valid_for).unwrap_or(1));
        Some(action.sign_with_time(valid_for, &time).into())
    }

    /// Proves the bucket takes writes: a small fixed object written over (so that probes
    /// leave nothing behind).
    pub async fn probe(&self) -> Result<(), StoreError> {
        self.put(PROBE_OBJECT, "text/plain", Bytes::from_static(b"chatfiles"))
            .await
    }

    /// Every object under the prefix, by name under it.
    pub async fn list(&self) -> Result<Vec<Listed>, StoreError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // Bounded: a thousand keys a page, at most ten million objects.
        for _ in 0..10_000 {
            let mut action = ListObjectsV2::new(&self.inner.bucket, self.credentials());
            if !self.inner.prefix.is_empty() {
                action.with_prefix(self.inner.prefix.as_str());
            }
            if let Some(token) = &token {
                action.with_continuation_token(token.as_str());
            }
            let url = action.sign(REQUEST_VALIDITY);
            let body = self.get_text(url).await?;
            for record in xml::records(&body, "Contents", &["Key", "Size"]) {
                let name = record[0]
                    .strip_prefix(&self.inner.prefix)
                    .unwrap_or(&record[0]);
                out.push(Listed {
                    name: name.to_owned(),
                    size: record[1].parse().unwrap_or(0),
                });
            }
            token = xml::text(&body, "NextContinuationToken").filter(|t| !t.is_empty());
            let truncated = xml::text(&body, "IsTruncated").is_some_and(|t| t == "true");
            if !truncated || token.is_none() {
                return Ok(out);
            }
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "the bucket listing does not end"
        )))
    }

    /// Multipart uploads begun under the prefix and never completed or aborted.
    pub async fn unfinished(&self) -> Result<Vec<Unfinished>, StoreError> {
        let prefix = self.inner.prefix.clone();
        let mut all = self.unfinished_under(&prefix).await?;
        for upload in &mut all {
            if let Some(name) = upload.name.strip_prefix(&self.inner.prefix) {
                upload.name = name.to_owned();
            }
        }
        Ok(all)
    }

    /// `ListMultipartUploads` (which rusty-s3 lacks) for names starting with `prefix`.
    async fn unfinished_under(&self, prefix: &str) -> Result<Vec<Unfinished>, StoreError> {
        let mut out = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..10_000 {
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some((key, upload)) = &markers {
                query.push(("key-marker", key));
                query.push(("upload-id-marker", upload));
            }
            query.push(("prefix", prefix));
            query.push(("uploads", ""));
            // Signed in name order.
            query.sort_unstable();
            let credentials = &self.inner.credentials;
            let url = rusty_s3::signing::sign(
                &Timestamp::now(),
                rusty_s3::Method::Get,
                self.inner.bucket.base_url().clone(),
                credentials.key(),
                credentials.secret(),
                credentials.token(),
                self.inner.bucket.region(),
                REQUEST_VALIDITY.as_secs(),
                query.iter().copied(),
                std::iter::empty(),
            );
            let body = self.get_text(url).await?;
            for record in xml::records(&body, "Upload", &["Key", "UploadId"]) {
                let [name, upload_id]: [String; 2] = record.try_into().unwrap_or_default();
                if name.starts_with(prefix) {
                    out.push(Unfinished { name, upload_id });
                }
            }
            let truncated = xml::text(&body, "IsTruncated").is_some_and(|t| t == "true");
            let next = (
                xml::text(&body, "NextKeyMarker").unwrap_or_default(),
                xml::text(&body, "NextUploadIdMarker").unwrap_or_default(),
            );
            if !truncated || next.0.is_empty() {
                return Ok(out);
            }
            markers = Some(next);
        }
        Err(StoreError::Other(anyhow::anyhow!(
            "the upload listing does not end"
        )))
    }

    /// Removes an object and any multipart upload still open under its name: what an
    /// interrupted upload of that key may have left.
    pub async fn purge(&self, key: &str) -> Result<(), StoreError> {
        let name = self.name(key);
        for upload in self.unfinished_under(&name).await? {
            self.abort_multipart(&upload.name, &upload.upload_id)
                .await?;
        }
        self.remove(key).await
    }

    /// Removes the objects (and open uploads) of `pending` keys that no row refers to: what an
    /// interrupted upload or delete left. Nothing else in the bucket is looked at.
    pub async fn sweep(
        &self,
        referenced: &HashSet<String>,
        pending: &[String],
    ) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        for key in pending.iter().filter(|k| !referenced.contains(*k)) {
            self.purge(key).await?;
            report.orphans += 1;
        }
        Ok(report)
    }

    /// Starts writing an object under `key`.
    pub fn writer(&self, key: &str, content_type: &str) -> S3Writer {
        S3Writer {
            store: self.clone(),
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            buffer: BytesMut::new(),
            upload: None,
            hasher: Sha256::new(),
            size: 0,
            done: false,
        }
    }

    /// Removes the object named `name` under the prefix, whatever it is (for `check --repair`).
    pub async fn remove_named(&self, name: &str) -> Result<(), StoreError> {
        self.purge(name).await
    }

    /// Aborts an unfinished upload found by [`S3Store::unfinished`].
    pub async fn abort(&self, upload: &Unfinished) -> Result<(), StoreError> {
        self.abort_multipart(&self.name(&upload.name), &upload.upload_id)
            .await
    }
}

/// The error an unsuccessful answer carries.
async fn failure(response: Response) -> S3Failure {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    S3Failure {
        status,
        code: xml::text(&body, "Code").unwrap_or_default(),
        message: xml::text(&body, "Message").unwrap_or_default(),
    }
}

/// A multipart upload under way: its id and the ETags of the parts sent.
#[derive(Debug)]
struct Multipart {
    upload_id: String,
    etags: Vec<String>,
}

/// An object being written: hashed and counted as it arrives, a part at a time in memory.
#[derive(Debug)]
pub struct S3Writer {
    store: S3Store,
    key: String,
    content_type: String,
    buffer: BytesMut,
    upload: Option<Multipart>,
    hasher: Sha256,
    size: u64,
    /// Completed or aborted: nothing left for Drop to clean up.
    done: bool,
}

impl S3Writer {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends `data`; sends a part whenever a whole one is buffered.
    ///
    /// The buffer never holds more than one part: once it outgrows a small file it is given
    /// exactly a part's capacity, so that it is not doubled past it, and each full part is
    /// handed over whole (no leftover keeps the allocation alive).
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(data);
        self.size += data.len() as u64;
        let part_size = self.store.inner.part_size;
        while !data.is_empty() {
            let take = (part_size - self.buffer.len()).min(data.len());
            if self.buffer.len() + take > self.buffer.capacity()
                && self.buffer.len() + take > SMALL_BUFFER
            {
                let mut whole = BytesMut::with_capacity(part_size);
                whole.extend_from_slice(&self.buffer);
                self.buffer = whole;
            }
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == part_size {
                let part = std::mem::take(&mut self.buffer).freeze();
                self.send_part(part).await?;
            }
        }
        Ok(())
    }

    async fn send_part(&mut self, part: Bytes) -> Result<(), StoreError> {
        if self.upload.is_none() {
            let upload_id = self
                .store
                .create_multipart(&self.key, &self.content_type)
                .await?;
            self.upload = Some(Multipart {
                upload_id,
                etags: Vec::new(),
            });
        }
        let Some(upload) = self.upload.as_mut() else {
            return Err(StoreError::Other(anyhow::anyhow!("no multipart upload")));
        };
        let number = u16::try_from(upload.etags.len() + 1)
            .map_err(|_| StoreError::Other(anyhow::anyhow!("too many parts")))?;
        let etag = self
            .store
            .upload_part(&self.key, &upload.upload_id, number, part)
            .await?;
        upload.etags.push(etag);
        Ok(())
    }

    /// The SHA-256 (hex) and size of everything written.
    pub fn finish(&mut self) -> (String, u64) {
        let digest = std::mem::take(&mut self.hasher).finalize();
        (hex::encode(digest), self.size)
    }

    /// Makes the object visible under its key, typed `content_type` when sent in one piece.
    pub async fn commit(mut self, content_type: &str) -> Result<(), StoreError> {
        let rest = self.buffer.split().freeze();
        let result = match self.upload.take() {
            None => self.store.put(&self.key, content_type, rest).await,
            Some(upload) => {
                self.upload = Some(upload);
                let sent = if rest.is_empty() {
                    Ok(())
                } else {
                    self.send_part(rest).await
                };
                match (sent, self.upload.as_ref()) {
                    (Ok(()), Some(upload)) => {
                        self.store
                            .complete_multipart(&self.key, &upload.upload_id, &upload.etags)
                            .await
                    }
                    (Ok(()), None) => Err(StoreError::Other(anyhow::anyhow!("upload lost"))),
                    (Err(err), _) => Err(err),
                }
            }
        };
        if result.is_ok() {
            self.done = true;
        }
        result
    }

    /// Gives up: an open multipart upload is aborted. False when that failed.
    pub async fn discard(mut self) -> bool {
        self.done = true;
        let Some(upload) = self.upload.take() else {
            return true;
        };
        let name = self.store.name(&self.key);
        match self.store.abort_multipart(&name, &upload.upload_id).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(object = %self.key, error = %err, "could not abort a multipart upload; the next start does");
                false
            }
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Dropped halfway (a client gone): abort in the background, if a runtime is at hand.
        if let Some(upload) = self.upload.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let store = self.store.clone();
            let name = store.name(&self.key);
            runtime.spawn(async move {
                let _ = store.abort_multipart(&name, &upload.upload_id).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(downloads: Downloads) -> S3Settings {
        let endpoint: Url = "http://127.0.0.1:8333"
            .parse()
            .unwrap_or_else(|_| unreachable!());
        S3Settings {
            bucket: "chat".into(),
            prefix: "files/".into(),
            endpoint: endpoint.clone(),
            public_endpoint: "https://files.example.com"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
            region: "us-east-1".into(),
            path_style: true,
            downloads,
            credentials: Some(S3Credentials {
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: SecretString::from("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                session_token: None,
            }),
        }
    }

    #[test]
    fn direct_urls_are_the_same_for_the_same_expiry_and_signed_in_the_past() {
        let store =
            S3Store::new(&settings(Downloads::Direct), 1 << 30).unwrap_or_else(|e| panic!("{e}"));
        let url = |expires| {
            store
                .direct_url(
                    "0123456789abcdef0123456789abcdef",
                    "text/plain",
                    "inline",
                    expires,
                    900,
                )
                .unwrap_or_default()
        };
        let first = url(2_000_000_040);
        assert_eq!(first, url(2_000_000_040));
        assert_ne!(first, url(2_000_000_100));
        assert!(
            first.starts_with("https://files.example.com/chat/files/0123456789abcdef"),
            "{first}"
        );
        // Signed a TTL and a minute before the expiry: 2033-05-18T03:18:00Z.
        assert!(first.contains("X-Amz-Date=20330518T031800Z"), "{first}");
        assert!(first.contains("X-Amz-Expires=960"), "{first}");
        assert!(
            first.contains("response-content-disposition=inline"),
            "{first}"
        );
        let week = store
            .direct_url(
                "0123456789abcdef0123456789abcdef",
                "a/b",
                "x",
                2_000_000_040,
                7 * 86400,
            )
            .unwrap_or_default();
        assert!(week.contains("X-Amz-Expires=604800"), "{week}");
    }

    #[test]
    fn proxied_downloads_have_no_direct_url() {
        let store =
            S3Store::new(&settings(Downloads::Proxy), 1 << 30).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.direct_url("k", "a/b", "x", 2_000_000_040, 900), None);
    }

    #[test]
    fn parts_are_large_enough_for_the_largest_file() {
        let small =
            S3Store::new(&settings(Downloads::Proxy), 25 << 20).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(small.inner.part_size, MIN_PART);
        let huge =
            S3Store::new(&settings(Downloads::Proxy), 200 << 30).unwrap_or_else(|e| panic!("{e}"));
        assert!(huge.inner.part_size as u64 * MAX_PARTS >= 200 << 30);
    }

    #[test]
    fn listings_and_errors_are_read_from_their_xml() {
        let list = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>chat</Bucket><IsTruncated>false</IsTruncated>
  <Upload><Key>files/a&amp;b</Key><UploadId>u1</UploadId></Upload>
  <Upload><Key>files/c</Key><UploadId>u2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        assert_eq!(
            xml::records(list, "Upload", &["Key", "UploadId"]),
            vec![
                vec!["files/a&b".to_owned(), "u1".to_owned()],
                vec!["files/c".to_owned(), "u2".to_owned()]
            ]
        );
        let error = "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        assert_eq!(xml::text(error, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(xml::text(error, "Missing"), None);
    }
}
