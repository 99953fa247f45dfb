//! One object's basic transfer (git-lfs `docs/api/basic-transfers.md`): `PUT` the bytes with
//! the action's headers, then `POST` the verify action when the server offers one.
//!
//! The bytes are streamed from the local store and hashed while read. The last chunk is held
//! back until the end of the file has been seen and the SHA-256 and size match the pointer:
//! on a mismatch the body is cut short of its `Content-Length`, so the server never receives a
//! complete wrong object, and the update fails naming the object.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::LfsError;
use super::batch::{Action, Client, LFS_MEDIA_TYPE, display_href};
use super::pointer::Pointer;

/// The size of the chunks read from the store and sent.
const CHUNK: usize = 256 * 1024;

/// Returns where the store keeps the object `oid`: `<store>/<oid[0:2]>/<oid[2:4]>/<oid>`.
pub fn object_path(store: &Path, oid: &str) -> PathBuf {
    store.join(&oid[..2]).join(&oid[2..4]).join(oid)
}

/// The reader's state between chunks.
struct Reading {
    file: tokio::fs::File,
    hasher: Sha256,
    read: u64,
    /// The chunk read but not yet sent.
    pending: Option<Vec<u8>>,
    done: bool,
    expected: Pointer,
    mismatch: Arc<AtomicBool>,
}

/// Returns the request body streaming `file`; `mismatch` is set if it does not match.
fn hashing_body(
    file: tokio::fs::File,
    expected: &Pointer,
    mismatch: Arc<AtomicBool>,
) -> reqwest::Body {
    let state = Reading {
        file,
        hasher: Sha256::new(),
        read: 0,
        pending: None,
        done: false,
        expected: expected.clone(),
        mismatch,
    };
    let stream = futures_util::stream::try_unfold(state, |mut st| async move {
        if st.done {
            return Ok::<_, std::io::Error>(None);
        }
        loop {
            let mut chunk = vec![0; CHUNK];
            let n = st.file.read(&mut chunk).await?;
            if n == 0 {
                st.done = true;
                let digest = hex(&st.hasher.clone().finalize());
                if digest != st.expected.oid || st.read != st.expected.size {
                    st.mismatch.store(true, Ordering::SeqCst);
                    return Err(std::io::Error::other("the object does not match its oid"));
                }
                return Ok(st.pending.take().map(|chunk| (chunk, st)));
            }
            chunk.truncate(n);
            st.hasher.update(&chunk);
            st.read += n as u64;
            if st.read > st.expected.size {
                st.mismatch.store(true, Ordering::SeqCst);
                return Err(std::io::Error::other(
                    "the object is larger than its pointer says",
                ));
            }
            if let Some(previous) = st.pending.replace(chunk) {
                return Ok(Some((previous, st)));
            }
        }
    });
    reqwest::Body::wrap_stream(stream)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Client {
    /// Adds the action's headers to `request`, exactly, and the mirror's credentials only
    /// when the action brings no `Authorization` and the object is not `authenticated`.
    fn with_action(
        &self,
        mut request: reqwest::RequestBuilder,
        action: &Action,
        authenticated: bool,
    ) -> reqwest::RequestBuilder {
        for (name, value) in action.header.iter().flatten() {
            request = request.header(name, value);
        }
        if !action.has_authorization() && !authenticated {
            request = self.with_credentials(request);
        }
        request
    }

    /// Uploads `pointer`'s object from `store` with `action`, then verifies it with `verify`
    /// when the server offered that.
    pub async fn upload(
        &self,
        store: &Path,
        pointer: &Pointer,
        upload: &Action,
        verify: Option<&Action>,
        authenticated: bool,
    ) -> Result<(), LfsError> {
        let path = object_path(store, &pointer.oid);
        let what = format!(
            "the upload of LFS object {} to {}",
            pointer.oid,
            display_href(&upload.href)
        );
        let has_content_type = upload
            .header
            .iter()
            .flatten()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        let mismatch = Arc::new(AtomicBool::new(false));
        let mismatch_error = || LfsError::Mismatch {
            oid: pointer.oid.clone(),
            path: path.clone(),
        };
        let sent = self
            .send(
                &what,
                || {
                    // A fresh read of the file for each attempt.
                    let file = std::fs::File::open(&path).map_err(|source| LfsError::Read {
                        path: path.clone(),
                        source,
                    })?;
                    let file = tokio::fs::File::from_std(file);
                    let body = hashing_body(file, pointer, mismatch.clone());
                    let mut request = self.http.put(&upload.href);
                    if !has_content_type {
                        request = request
                            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream");
                    }
                    let request = request
                        .header(reqwest::header::CONTENT_LENGTH, pointer.size)
                        .body(body);
                    Ok(self.with_action(request, upload, authenticated))
                },
                || mismatch_flag(&mismatch).then(mismatch_error),
            )
            .await;
        if mismatch_flag(&mismatch) {
            return Err(mismatch_error());
        }
        sent?;
        let Some(verify) = verify else {
            return Ok(());
        };
        let what = format!(
            "the verify of LFS object {} at {}",
            pointer.oid,
            display_href(&verify.href)
        );
        let body = serde_json::json!({"oid": pointer.oid, "size": pointer.size}).to_string();
        self.send(
            &what,
            || {
                let request = self
                    .http
                    .post(&verify.href)
                    .header(reqwest::header::ACCEPT, LFS_MEDIA_TYPE)
                    .header(reqwest::header::CONTENT_TYPE, LFS_MEDIA_TYPE)
                    .body(body.clone());
                Ok(self.with_action(request, verify, authenticated))
            },
            || None,
        )
        .await?;
        Ok(())
    }
}

fn mismatch_flag(flag: &AtomicBool) -> bool {
    flag.load(Ordering::SeqCst)
}
