//! The exports Envoy calls and the VM's contexts.

use super::envoy::Envoy;
use crate::filter::{Root, Stream};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

// The exports Envoy calls (proxy-wasm ABI 0.2.1). Only what the filter uses is exported: a
// callback the module does not export is never called (no VM crossing for request bodies,
// request trailers or queue events). HTTP-call answers reach only the root that sent the call
// (the guard pool's query). Unknown context ids are ignored, never a trap.

/// The ABI version marker Envoy looks for.
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[cfg(target_arch = "wasm32")]
extern "C" {
    /// wasi-libc's static constructors (a reactor module runs them from `_initialize`).
    fn __wasm_call_ctors();
}

/// Called once by Envoy after instantiation.
#[cfg(target_arch = "wasm32")]
#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: called once, before any other export, as a WASI reactor's `_initialize` must.
    unsafe { __wasm_call_ctors() }
}

/// Buffers the host hands to the VM (header values, bodies, configuration) are allocated here:
/// a boxed `[u8]` of exactly `size` bytes, which [`owned`] takes back.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<std::mem::MaybeUninit<u8>> = Vec::with_capacity(size);
    // SAFETY: `MaybeUninit` needs no initialisation, and the capacity is `size`.
    unsafe { v.set_len(size) };
    Box::into_raw(v.into_boxed_slice()).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    with(|c| {
        if root_context_id == 0 {
            c.roots.push((context_id, Root::new(Envoy)));
        } else if let Some(stream) = c.root(root_context_id).map(Root::stream) {
            c.streams.insert(context_id, stream);
        }
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(context_id: u32, _vm_configuration_size: usize) -> bool {
    with(|c| c.root(context_id).is_some_and(Root::on_vm_start))
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> bool {
    with(|c| c.root_mut(context_id).is_some_and(Root::on_configure))
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    with(|c| c.root(context_id).map(Root::on_tick));
}

/// The answer to the guard pool's query (or its failure: no headers).
#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    context_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    with(|c| {
        c.root(context_id)
            .map(|r| r.on_http_call_response(token, num_headers, body_size))
    });
}

/// A stream is done at once; a root flushes its counters first (and says so).
#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> bool {
    with(|c| c.root(context_id).is_none_or(Root::on_done))
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    with(|c| c.streams.get_mut(&context_id).map(Stream::on_log));
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    with(|c| {
        if c.streams.remove(&context_id).is_none() {
            c.roots.retain(|(id, _)| *id != context_id);
        }
    });
}

/// `Continue`: the filter never pauses a stream.
const CONTINUE: u32 = 0;

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, _eos: bool) -> u32 {
    with(|c| {
        c.streams
            .get_mut(&context_id)
            .map(Stream::on_request_headers)
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: usize, eos: bool) -> u32 {
    with(|c| {
        c.streams
            .get_mut(&context_id)
            .map(|s| s.on_response_headers(eos))
    });
    CONTINUE
}

/// Always streams on: the client gets the body exactly as the upstream sent it.
#[no_mangle]
pub extern "C" fn proxy_on_response_body(context_id: u32, size: usize, eos: bool) -> u32 {
    with(|c| {
        c.streams
            .get_mut(&context_id)
            .map(|s| s.on_response_body(size, eos))
    });
    CONTINUE
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(context_id: u32, _trailers: usize) -> u32 {
    with(|c| {
        c.streams
            .get_mut(&context_id)
            .map(Stream::on_response_trailers)
    });
    CONTINUE
}

/// The VM's contexts: a few roots (one per plugin instance sharing the VM, two while a new
/// configuration replaces an old one), and the live streams by context id.
struct Contexts {
    roots: Vec<(u32, Root<Envoy>)>,
    streams: HashMap<u32, Stream<Envoy>, BuildHasherDefault<IdHasher>>,
}

impl Contexts {
    fn root(&self, id: u32) -> Option<&Root<Envoy>> {
        self.roots.iter().find(|(i, _)| *i == id).map(|(_, r)| r)
    }

    fn root_mut(&mut self, id: u32) -> Option<&mut Root<Envoy>> {
        self.roots
            .iter_mut()
            .find(|(i, _)| *i == id)
            .map(|(_, r)| r)
    }
}

/// Context ids are small sequential integers: one multiply spreads them over the table.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, id: u32) {
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The contexts of this VM. A proxy-wasm VM runs one thread (wasm32-wasip1 has none), so
/// sharing a `RefCell` is sound here; a re-entrant callback (none exists in the ABI) would find
/// it borrowed and do nothing rather than trap.
struct Global(RefCell<Option<Contexts>>);

// SAFETY: the module is single-threaded (see above); nothing is ever shared across threads.
unsafe impl Sync for Global {}

static CONTEXTS: Global = Global(RefCell::new(None));

fn with<R: Default>(f: impl FnOnce(&mut Contexts) -> R) -> R {
    let Ok(mut contexts) = CONTEXTS.0.try_borrow_mut() else {
        return R::default();
    };
    f(contexts.get_or_insert_with(|| Contexts {
        roots: Vec::new(),
        streams: HashMap::default(),
    }))
}
