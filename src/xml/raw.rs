//! The libxml2 calls made around the `libxml` crate, for what it does lossily, wastefully
//! or not at all: parsing without a copy of the input, exclusive c14n and serialisation
//! as bytes, a read-only walk of the element tree (with libxml2's own judgement of
//! namespace URIs), and libxml2's error reports routed to `tracing`.
//!
//! Why raw: the crate (0.3.23) decodes each c14n flush with `from_utf8_lossy` (its
//! `c14n.rs`, `xml_write_io`) and serialises with `to_string_lossy`. libxml2 flushes
//! inside a long text or attribute value, so a multi-byte character cut at a flush became
//! U+FFFD and the digest covered a text the message did not hold. Here every byte
//! libxml2 writes goes unchanged to a SHA-256 or a `Vec<u8>`. The crate's tree walk wraps
//! each node in a reference-counted handle registered with its document; [`walk`] reads
//! the tree in place, which is what a million-element document needs. The crate parses
//! with `xmlCtxtReadMemory`, which copies the input into a buffer of twice its size
//! first; [`parse`] feeds libxml2 through a read callback instead.
//!
//! The c14n is xmlsec's: `xmlC14NExecute` over the document with a visibility callback
//! that keeps one subtree, so the namespaces the subtree inherits come out as a verifier
//! computes them. For the call, the subtree and its ancestors are made the only children
//! of their parents ([`isolate`]), so that libxml2 walks the path to the subtree and not
//! the whole document; the output is the same. SignedInfo, which inherits nothing but
//! its `ds` prefix, is canonicalised from a copy in a document of its own when it is
//! signed. XAdES's `URI=""` is the whole document: the same c14n with no callback.
//!
//! Every pointer here comes from a `libxml::tree::Document` or `Node` borrowed for the
//! whole call. libxml2 only reads that tree in these calls, and the only change of ours
//! is `isolate`'s, undone before the call returns; each block says what else it relies
//! on. With src/token/raw.rs, this is the crate's only `unsafe` code.
#![allow(unsafe_code)]

use std::borrow::Cow;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::marker::PhantomData;

use libxml::bindings::{
    xmlAttr, xmlC14NExecute, xmlDocCopyNode, xmlDocPtr, xmlDocSetRootElement,
    xmlElementType_XML_ATTRIBUTE_NODE, xmlElementType_XML_CDATA_SECTION_NODE,
    xmlElementType_XML_ELEMENT_NODE, xmlElementType_XML_NAMESPACE_DECL,
    xmlElementType_XML_TEXT_NODE, xmlErrorPtr, xmlFreeDoc, xmlFreeURI, xmlGetLineNo, xmlNewDoc,
    xmlNodePtr, xmlOutputBufferClose, xmlOutputBufferCreateIO, xmlParseURI, xmlReadIO,
    xmlSaveClose, xmlSaveDoc, xmlSaveOption_XML_SAVE_NO_DECL, xmlSaveToIO, xmlSetGenericErrorFunc,
    xmlSetStructuredErrorFunc, xmlThrDefSetGenericErrorFunc, xmlThrDefSetStructuredErrorFunc,
};
use libxml::error::StructuredError;
use libxml::tree::{Document, Node};

use super::error::{without_quoted, XmlError};

/// `XML_C14N_EXCLUSIVE_1_0` in libxml2's `xmlC14NMode`.
const EXCLUSIVE_1_0: c_int = 1;

/// Where libxml2's output goes: a closure, reached through the `void *` context.
struct Sink<'a> {
    write: &'a mut dyn FnMut(&[u8]),
}

/// libxml2's `xmlOutputWriteCallback`: hands the chunk to the sink, unchanged.
unsafe extern "C" fn write_to_sink(
    context: *mut c_void,
    buffer: *const c_char,
    len: c_int,
) -> c_int {
    if context.is_null() || len < 0 {
        return -1;
    }
    if len > 0 {
        // SAFETY: `context` is the `Sink` that `exc_c14n` or `serialize` created and keeps
        // alive (and does not otherwise touch) until libxml2's buffer is closed; libxml2
        // passes `len` readable bytes at `buffer`, valid for the duration of this call.
        unsafe {
            let sink = &mut *(context as *mut Sink<'_>);
            (sink.write)(std::slice::from_raw_parts(
                buffer as *const u8,
                len as usize,
            ));
        }
    }
    len
}

/// libxml2's `xmlOutputCloseCallback`: the sink belongs to the caller, nothing to free.
unsafe extern "C" fn close_sink(_context: *mut c_void) -> c_int {
    0
}

/// The bytes libxml2 has not read yet, reached through the `void *` context.
struct Reader<'a> {
    rest: &'a [u8],
}

/// libxml2's `xmlInputReadCallback`: copies up to `len` bytes of what is left.
unsafe extern "C" fn read_from(context: *mut c_void, buffer: *mut c_char, len: c_int) -> c_int {
    if context.is_null() || buffer.is_null() || len < 0 {
        return -1;
    }
    // SAFETY: `context` is the `Reader` that `parse` created and keeps alive (and does
    // not otherwise touch) until xmlReadIO returns; libxml2 passes `len` writable bytes
    // at `buffer`, which cannot overlap the caller's input.
    unsafe {
        let reader = &mut *(context as *mut Reader<'_>);
        let n = reader.rest.len().min(len as usize);
        std::ptr::copy_nonoverlapping(reader.rest.as_ptr(), buffer as *mut u8, n);
        reader.rest = &reader.rest[n..];
        n as c_int
    }
}

/// The most reports kept from one parse, as the `libxml` crate keeps.
const MAX_REPORTS: usize = 100;

/// libxml2's structured error handler during [`parse`]: keeps the report.
unsafe extern "C" fn collect_report(reports: *mut c_void, error: xmlErrorPtr) {
    if reports.is_null() || error.is_null() {
        return;
    }
    // SAFETY: `reports` is the `Vec` that `parse` installed for this thread and keeps
    // alive until it restores the handler; libxml2 passes a live `xmlError`.
    unsafe {
        let reports = &mut *(reports as *mut Vec<StructuredError>);
        if reports.len() < MAX_REPORTS {
            reports.push(StructuredError::from_raw(error));
        }
    }
}

/// Parses `input` with `xmlReadIO` and the parser `options`: the document, if libxml2
/// made one, and what it reported. libxml2 reads the input through a callback a few
/// kilobytes at a time, where `xmlReadMemory` would first copy all of it into a buffer
/// of twice its size; a large document is then held once, by the caller. The thread's
/// error handlers are sent to `tracing` again afterwards.
pub(crate) fn parse(input: &[u8], options: c_int) -> (Option<Document>, Vec<StructuredError>) {
    let mut reader = Reader { rest: input };
    let mut reports: Box<Vec<StructuredError>> = Box::default();
    // SAFETY: the handler's context is the boxed `Vec`, alive until the handlers are
    // routed back below; `reader` outlives xmlReadIO, which closes its input (no close
    // callback: the reader is ours) before returning. A NULL URL and encoding are allowed.
    // The document returned is owned by nobody else and is handed to `Document`, which
    // frees it.
    let doc = unsafe {
        xmlSetStructuredErrorFunc(
            &mut *reports as *mut Vec<StructuredError> as *mut c_void,
            Some(collect_report),
        );
        let doc = xmlReadIO(
            Some(read_from),
            None,
            &mut reader as *mut Reader<'_> as *mut c_void,
            std::ptr::null(),
            std::ptr::null(),
            options,
        );
        route_errors_to_tracing();
        doc
    };
    let doc = (!doc.is_null()).then(|| Document::new_ptr(doc));
    (doc, *reports)
}

/// The subtree `xmlC14NExecute` is to output, and what is known of the nodes libxml2
/// already asked about. It asks about every node of the document in document order,
/// mostly children of a node it has just asked about, so remembering the last answers
/// (direct-mapped by address) makes most answers one step up the tree instead of a climb
/// to the root.
struct Subtree {
    root: xmlNodePtr,
    known: [(xmlNodePtr, bool); 64],
}

impl Subtree {
    fn new(root: xmlNodePtr) -> Self {
        Subtree {
            root,
            known: [(std::ptr::null_mut(), false); 64],
        }
    }

    fn slot(node: xmlNodePtr) -> usize {
        (node as usize >> 4) & 63
    }

    /// Whether `node` is the root or below it.
    ///
    /// SAFETY (for callers): `node` is NULL or a live node (element, text, comment, PI)
    /// of the document being canonicalised, which is not edited during the c14n; a
    /// node's membership cannot change then, so a remembered answer stays true.
    unsafe fn contains(&mut self, node: xmlNodePtr) -> bool {
        let mut cur = node;
        let inside = loop {
            if cur.is_null() {
                break false;
            }
            if cur == self.root {
                break true;
            }
            let (seen, inside) = self.known[Self::slot(cur)];
            if seen == cur {
                break inside;
            }
            // SAFETY: see the function's contract; parents lead up to the document node,
            // whose parent is NULL.
            cur = unsafe { (*cur).parent };
        };
        if !node.is_null() {
            self.known[Self::slot(node)] = (node, inside);
        }
        inside
    }
}

/// `xmlC14NIsVisibleCallback`: a node is output when it is the subtree's root or below it.
unsafe extern "C" fn under_root(
    subtree: *mut c_void,
    node: xmlNodePtr,
    parent: xmlNodePtr,
) -> c_int {
    // SAFETY: `subtree` is the `Subtree` that `c14n_into` passes and keeps alive, used by
    // nothing else during the c14n. libxml2 passes a node of the document being
    // canonicalised and its parent element. A namespace node is an `xmlNs`, whose `type`
    // field sits where `xmlNode`'s does (libxml2's own c14n.c tells them apart the same
    // way); it and an attribute are judged by their element.
    unsafe {
        let subtree = &mut *(subtree as *mut Subtree);
        let element = if node.is_null() {
            parent
        } else {
            match (*node).type_ {
                t if t == xmlElementType_XML_NAMESPACE_DECL => parent,
                t if t == xmlElementType_XML_ATTRIBUTE_NODE => (*(node as *mut xmlAttr)).parent,
                _ => node,
            }
        };
        c_int::from(subtree.contains(element))
    }
}

/// The exclusive c14n 1.0 (without comments, no inclusive prefixes) of `node` in `doc`,
/// each chunk passed to `sink` as libxml2 writes it.
pub(crate) fn exc_c14n(
    doc: &Document,
    node: &Node,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), XmlError> {
    let doc_ptr = doc.doc_ptr();
    let node_ptr = node.node_ptr();
    if doc_ptr.is_null() || node_ptr.is_null() {
        return Err(XmlError::internal("c14n of a null node"));
    }
    // SAFETY: `doc_ptr` and `node_ptr` are live (borrowed from `doc` and `node`), and
    // `node` belongs to `doc` (every caller takes both from the same parse).
    unsafe { c14n_into(doc_ptr, Some(node_ptr), sink) }
}

/// The exclusive c14n 1.0 (without comments) of the whole of `doc`, what a Reference
/// `URI=""` selects: the document element and any processing instruction outside it.
pub(crate) fn exc_c14n_document(
    doc: &Document,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), XmlError> {
    let doc_ptr = doc.doc_ptr();
    if doc_ptr.is_null() {
        return Err(XmlError::internal("c14n of a null document"));
    }
    // SAFETY: `doc_ptr` is live (borrowed from `doc`), and no node is passed.
    unsafe { c14n_into(doc_ptr, None, sink) }
}

/// The exclusive c14n of `node` copied alone into a document of its own, where libxml2
/// walks only the copy instead of the whole document. libxml2's copy declares the
/// namespaces the subtree uses from outside on its root, which is what exclusive c14n
/// renders there in context too; the caller must only use this for a subtree with no
/// `xml:*` attributes inherited (SignedInfo), and the re-parse check compares it with the
/// in-context c14n anyway.
pub(crate) fn exc_c14n_alone(node: &Node, sink: &mut dyn FnMut(&[u8])) -> Result<(), XmlError> {
    let node_ptr = node.node_ptr();
    if node_ptr.is_null() {
        return Err(XmlError::internal("c14n of a null node"));
    }
    // SAFETY: `node_ptr` is live (borrowed from `node`) and only read by the copy; the new
    // document owns the copy and is freed here, after the c14n, on every path.
    unsafe {
        let doc = xmlNewDoc(c"1.0".as_ptr() as *const u8);
        if doc.is_null() {
            return Err(XmlError::internal("libxml2 could not allocate a document"));
        }
        let copy = xmlDocCopyNode(node_ptr, doc, 1);
        if copy.is_null() {
            xmlFreeDoc(doc);
            return Err(XmlError::internal("libxml2 could not copy SignedInfo"));
        }
        xmlDocSetRootElement(doc, copy);
        let result = c14n_into(doc, None, sink);
        xmlFreeDoc(doc);
        result
    }
}

/// One link [`isolate`] changed: `node`'s siblings and its parent's first and last child.
struct Cut {
    node: xmlNodePtr,
    parent: xmlNodePtr,
    prev: xmlNodePtr,
    next: xmlNodePtr,
    first: xmlNodePtr,
    last: xmlNodePtr,
}

/// Makes `node` and each of its ancestors the only child of its parent, until [`restore`]
/// puts the links back, so that `xmlC14NExecute` walks the path to `node` and its
/// subtree instead of the whole document. It walks everything it is given, and in full
/// for the nodes outside the subtree too (namespace lookups up the tree, the visibility
/// callback for each attribute), so the c14n of SignedInfo in an envelope cost as much as
/// the c14n of its Body. The output is the same: the exclusive c14n of a subtree depends
/// on the subtree and on the namespace declarations of its ancestors, which stay in
/// place; libxml2 saves and restores its namespace state around each sibling element,
/// so the siblings never change what it renders.
///
/// Only pointers change: nothing is freed, created or moved in memory.
///
/// SAFETY (for callers): `node` is a live node of a document that nothing else reads or
/// edits until `restore` has run with the cuts returned.
unsafe fn isolate(node: xmlNodePtr) -> Vec<Cut> {
    let mut cuts = Vec::new();
    let mut cur = node;
    // SAFETY: see the function's contract. Parents lead up to the document node, whose
    // `children` and `last` sit where an `xmlNode`'s do (libxml2 relies on the same
    // common header), and whose parent is NULL.
    unsafe {
        while !cur.is_null() && !(*cur).parent.is_null() {
            let parent = (*cur).parent;
            cuts.push(Cut {
                node: cur,
                parent,
                prev: (*cur).prev,
                next: (*cur).next,
                first: (*parent).children,
                last: (*parent).last,
            });
            (*cur).prev = std::ptr::null_mut();
            (*cur).next = std::ptr::null_mut();
            (*parent).children = cur;
            (*parent).last = cur;
            cur = parent;
        }
    }
    cuts
}

/// Puts back the links [`isolate`] changed, innermost last.
///
/// SAFETY (for callers): `cuts` come from `isolate` on a tree not edited since.
unsafe fn restore(cuts: &[Cut]) {
    // SAFETY: see the function's contract; every pointer was live when cut and nothing
    // was freed since.
    unsafe {
        for cut in cuts.iter().rev() {
            (*cut.node).prev = cut.prev;
            (*cut.node).next = cut.next;
            (*cut.parent).children = cut.first;
            (*cut.parent).last = cut.last;
        }
    }
}

/// Runs `xmlC14NExecute` on `doc` (the subtree at `root` only, when given) into `sink`.
///
/// SAFETY (for callers): `doc` is a live document, `root` a live node of it, and neither
/// is edited during the call.
unsafe fn c14n_into(
    doc: xmlDocPtr,
    root: Option<xmlNodePtr>,
    sink: &mut dyn FnMut(&[u8]),
) -> Result<(), XmlError> {
    let mut sink = Sink { write: sink };
    let mut subtree = root.map(Subtree::new);
    // SAFETY: see the function's contract; the links are put back below, on every path,
    // before anything else sees the tree.
    let cuts = match root {
        Some(root) => unsafe { isolate(root) },
        None => Vec::new(),
    };
    // SAFETY: see the function's contract; `sink` and `subtree` outlive the buffer and
    // the c14n (closed below, before they go out of scope); a NULL prefix list, no
    // encoder, and no visibility callback (the whole document) are allowed by libxml2.
    let status = unsafe {
        let buf = xmlOutputBufferCreateIO(
            Some(write_to_sink),
            Some(close_sink),
            &mut sink as *mut Sink<'_> as *mut c_void,
            std::ptr::null_mut(),
        );
        if buf.is_null() {
            restore(&cuts);
            return Err(XmlError::internal(
                "libxml2 could not allocate a c14n buffer",
            ));
        }
        let (visible, user_data) = match subtree.as_mut() {
            Some(subtree) => (
                Some(under_root as unsafe extern "C" fn(_, _, _) -> _),
                subtree as *mut Subtree as *mut c_void,
            ),
            None => (None, std::ptr::null_mut()),
        };
        let written = xmlC14NExecute(
            doc,
            visible,
            user_data,
            EXCLUSIVE_1_0,
            std::ptr::null_mut(),
            0,
            buf,
        );
        let closed = xmlOutputBufferClose(buf);
        if written < 0 {
            written
        } else {
            closed
        }
    };
    // SAFETY: `cuts` are the links `isolate` changed, in its order.
    unsafe { restore(&cuts) };
    if status < 0 {
        return Err(XmlError::internal("exclusive c14n failed"));
    }
    Ok(())
}

/// libxml2's serialisation of `doc` (UTF-8, no XML declaration, no reformatting),
/// appended to `out` as bytes.
pub(crate) fn serialize(doc: &Document, out: &mut Vec<u8>) -> Result<(), XmlError> {
    let doc_ptr: xmlDocPtr = doc.doc_ptr();
    if doc_ptr.is_null() {
        return Err(XmlError::internal("serialising a null document"));
    }
    let mut write = |chunk: &[u8]| out.extend_from_slice(chunk);
    let mut sink = Sink { write: &mut write };
    // SAFETY: as in `exc_c14n`: `sink` outlives the save context, closed before returning;
    // the encoding name is a NUL-terminated literal; `doc_ptr` is live.
    let (saved, closed) = unsafe {
        let ctxt = xmlSaveToIO(
            Some(write_to_sink),
            Some(close_sink),
            &mut sink as *mut Sink<'_> as *mut c_void,
            c"UTF-8".as_ptr(),
            xmlSaveOption_XML_SAVE_NO_DECL as c_int,
        );
        if ctxt.is_null() {
            return Err(XmlError::internal("libxml2 could not start serialising"));
        }
        let saved = xmlSaveDoc(ctxt, doc_ptr);
        (saved, xmlSaveClose(ctxt))
    };
    if saved < 0 || closed < 0 {
        return Err(XmlError::internal(
            "libxml2 failed to serialise the document",
        ));
    }
    Ok(())
}

/// An element seen during [`walk`], valid only inside the visitor's call.
pub(crate) struct Element<'a> {
    ptr: xmlNodePtr,
    _tree: PhantomData<&'a Document>,
}

/// An attribute of an [`Element`].
pub(crate) struct Attribute<'a> {
    ptr: *mut xmlAttr,
    _tree: PhantomData<&'a Document>,
}

/// The bytes of a NUL-terminated libxml2 string, empty for NULL.
///
/// SAFETY (for callers): `s` is NULL or a NUL-terminated string that lives as long as `'a`.
unsafe fn bytes<'a>(s: *const u8) -> &'a [u8] {
    if s.is_null() {
        return b"";
    }
    // SAFETY: see the function's contract.
    unsafe { CStr::from_ptr(s as *const c_char).to_bytes() }
}

/// The href of the namespace `ns` points at, if any.
///
/// SAFETY (for callers): `ns` is NULL or a live `xmlNs` of a tree that lives for `'a`.
unsafe fn href<'a>(ns: *mut libxml::bindings::xmlNs) -> Option<&'a [u8]> {
    if ns.is_null() {
        None
    } else {
        // SAFETY: see the function's contract; an `xmlNs`'s href is NULL or NUL-terminated.
        Some(unsafe { bytes((*ns).href) })
    }
}

// SAFETY, for every accessor below: an `Element` or `Attribute` holds a pointer into a
// tree that `walk` borrows for the visitor's call, during which nothing edits the tree;
// the visitor receives `&Element<'a>` for a fresh `'a`, so no pointer outlives the call.
impl<'a> Element<'a> {
    /// The local name.
    pub fn name(&self) -> &'a [u8] {
        // SAFETY: see above; an element's name is a NUL-terminated dictionary string.
        unsafe { bytes((*self.ptr).name) }
    }

    /// The namespace URI, `None` for no namespace.
    pub fn namespace(&self) -> Option<&'a [u8]> {
        // SAFETY: see above.
        unsafe { href((*self.ptr).ns) }
    }

    /// Whether this element is `name` in namespace `ns`.
    pub fn is(&self, ns: &str, name: &str) -> bool {
        self.name() == name.as_bytes() && self.namespace() == Some(ns.as_bytes())
    }

    /// The line the element starts on (libxml2 counts up to 65,535, then stays there).
    pub fn line(&self) -> u32 {
        // SAFETY: see above; xmlGetLineNo only reads the node.
        let line = unsafe { xmlGetLineNo(self.ptr) };
        u32::try_from(line).unwrap_or(0)
    }

    /// Whether every namespace the element declares can be canonicalised: empty (an
    /// undeclaration) or an absolute URI, judged by libxml2's own URI parser as its c14n
    /// judges it (C14N 1.0 refuses relative namespace URIs).
    pub fn namespaces_canonicalisable(&self) -> bool {
        // SAFETY: see above; `nsDef` is a NULL-terminated list whose hrefs are NULL or
        // NUL-terminated; xmlParseURI only reads its argument, and its result is freed
        // here.
        unsafe {
            let mut ns = (*self.ptr).nsDef;
            while !ns.is_null() {
                let href = (*ns).href;
                if !href.is_null() && *href != 0 {
                    let uri = xmlParseURI(href as *const c_char);
                    let absolute = !uri.is_null() && !(*uri).scheme.is_null();
                    if !uri.is_null() {
                        xmlFreeURI(uri);
                    }
                    if !absolute {
                        return false;
                    }
                }
                ns = (*ns).next;
            }
        }
        true
    }

    /// The attributes, in document order.
    pub fn attributes(&self) -> impl Iterator<Item = Attribute<'a>> {
        // SAFETY: see above; `properties` is a NULL-terminated list.
        let mut next = unsafe { (*self.ptr).properties };
        std::iter::from_fn(move || {
            if next.is_null() {
                return None;
            }
            let attr = Attribute {
                ptr: next,
                _tree: PhantomData,
            };
            // SAFETY: `next` is a live attribute of this element.
            next = unsafe { (*next).next };
            Some(attr)
        })
    }

    /// The text and CDATA directly inside the element, concatenated.
    pub fn text(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // SAFETY: see above; `children` is a NULL-terminated list, and a text or CDATA
        // node's content is NUL-terminated.
        unsafe {
            let mut child = (*self.ptr).children;
            while !child.is_null() {
                let t = (*child).type_;
                if t == xmlElementType_XML_TEXT_NODE || t == xmlElementType_XML_CDATA_SECTION_NODE {
                    out.extend_from_slice(bytes((*child).content));
                }
                child = (*child).next;
            }
        }
        out
    }
}

impl<'a> Attribute<'a> {
    /// The local name.
    pub fn name(&self) -> &'a [u8] {
        // SAFETY: see above.
        unsafe { bytes((*self.ptr).name) }
    }

    /// The namespace URI, `None` for no namespace.
    pub fn namespace(&self) -> Option<&'a [u8]> {
        // SAFETY: see above.
        unsafe { href((*self.ptr).ns) }
    }

    /// The value. Without a DTD, an attribute's children are text nodes only (entity
    /// references are refused with the DOCTYPE), usually one.
    pub fn value(&self) -> Cow<'a, [u8]> {
        // SAFETY: see above; the children list is NULL-terminated and each text node's
        // content is NUL-terminated.
        unsafe {
            let first = (*self.ptr).children;
            if first.is_null() {
                return Cow::Borrowed(b"");
            }
            if (*first).next.is_null() {
                return Cow::Borrowed(bytes((*first).content));
            }
            let mut out = Vec::new();
            let mut child = first;
            while !child.is_null() {
                out.extend_from_slice(bytes((*child).content));
                child = (*child).next;
            }
            Cow::Owned(out)
        }
    }
}

/// Visits every element of `doc` in document order, with its depth (the root is 1), its
/// index among its parent's element children, and no recursion: the stack is the tree.
pub(crate) fn walk<F>(doc: &Document, mut visit: F) -> Result<(), XmlError>
where
    F: for<'a> FnMut(&Element<'a>, usize, usize) -> Result<(), XmlError>,
{
    let Some(root) = doc.get_root_element() else {
        return Err(XmlError::internal("no root element"));
    };
    let root = root.node_ptr();
    // SAFETY: the tree belongs to `doc`, borrowed for the whole walk and not edited by
    // it; `children`, `next` and `parent` are NULL-terminated links of a well-formed tree,
    // and the climb stops at `root`, whose subtree is all that is visited.
    unsafe {
        let mut cur = root;
        let mut depth = 1usize;
        let mut index = 0usize;
        let mut indices: Vec<usize> = Vec::new();
        loop {
            let element = Element {
                ptr: cur,
                _tree: PhantomData,
            };
            visit(&element, depth, index)?;
            if let Some(child) = next_element((*cur).children) {
                indices.push(index);
                cur = child;
                depth += 1;
                index = 0;
                continue;
            }
            loop {
                if cur == root {
                    return Ok(());
                }
                if let Some(sibling) = next_element((*cur).next) {
                    cur = sibling;
                    index += 1;
                    break;
                }
                cur = (*cur).parent;
                depth -= 1;
                index = indices.pop().unwrap_or(0);
            }
        }
    }
}

/// The first element node at or after `node` among its siblings.
///
/// SAFETY (for callers): `node` is NULL or a live node of a tree not being edited.
unsafe fn next_element(mut node: xmlNodePtr) -> Option<xmlNodePtr> {
    // SAFETY: see the function's contract.
    unsafe {
        while !node.is_null() {
            if (*node).type_ == xmlElementType_XML_ELEMENT_NODE {
                return Some(node);
            }
            node = (*node).next;
        }
    }
    None
}

/// libxml2's structured error handler: the report goes to `tracing` at debug level, its
/// quoted parts (content: names, values, URIs) dropped and the rest escaped. The HTTP
/// answer carries the parser's first error already; this keeps libxml2 off stderr.
unsafe extern "C" fn log_structured(_data: *mut c_void, error: xmlErrorPtr) {
    if error.is_null() {
        return;
    }
    // SAFETY: libxml2 passes a live `xmlError` for the duration of the call; its message
    // is NULL or NUL-terminated.
    let (domain, code, line, message) = unsafe {
        let e = &*error;
        let message = if e.message.is_null() {
            Cow::Borrowed("")
        } else {
            CStr::from_ptr(e.message).to_string_lossy()
        };
        (e.domain, e.code, e.line, without_quoted(&message))
    };
    tracing::debug!(target: "libxml2", domain, code, line, message = %message, "libxml2 reported");
}

/// glibc's `cookie_io_functions_t` (fopencookie(3)); only `write` is used.
#[repr(C)]
struct CookieIo {
    read: *const c_void,
    write: Option<unsafe extern "C" fn(*mut c_void, *const c_char, libc::size_t) -> libc::ssize_t>,
    seek: *const c_void,
    close: *const c_void,
}

unsafe extern "C" {
    /// glibc's fopencookie(3): a `FILE` whose writes go to the functions given. The libc
    /// crate does not declare it.
    fn fopencookie(cookie: *mut c_void, mode: *const c_char, io: CookieIo) -> *mut libc::FILE;
}

/// The `FILE`'s write function: one line of libxml2's generic error text (the stream is
/// line-buffered) to `tracing`, quoted parts dropped and the rest escaped, as
/// [`log_structured`] does.
unsafe extern "C" fn log_generic(
    _cookie: *mut c_void,
    buf: *const c_char,
    size: libc::size_t,
) -> libc::ssize_t {
    if !buf.is_null() && size > 0 {
        // SAFETY: glibc passes `size` readable bytes at `buf` for the duration of the call.
        let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, size) };
        let message = without_quoted(&String::from_utf8_lossy(bytes));
        tracing::debug!(target: "libxml2", message = %message, "libxml2 reported");
    }
    libc::ssize_t::try_from(size).unwrap_or(libc::ssize_t::MAX)
}

/// The stream libxml2's generic error reports are printed to: made once, never closed.
/// Its address is kept as a number, since a raw pointer is not `Sync`.
fn generic_error_stream() -> *mut c_void {
    static STREAM: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *STREAM.get_or_init(|| {
        let io = CookieIo {
            read: std::ptr::null(),
            write: Some(log_generic),
            seek: std::ptr::null(),
            close: std::ptr::null(),
        };
        // SAFETY: fopencookie takes a NUL-terminated mode and the functions by value; a
        // NULL read, seek or close is allowed for a write-only stream, and the cookie is
        // unused. setvbuf on a stream nothing has written to yet is allowed, and with a
        // NULL buffer glibc allocates its own.
        unsafe {
            let stream = fopencookie(std::ptr::null_mut(), c"w".as_ptr(), io);
            if !stream.is_null() {
                libc::setvbuf(stream, std::ptr::null_mut(), libc::_IOLBF, 0);
            }
            stream as usize
        }
    }) as *mut c_void
}

/// Sends libxml2's error reports from the calling thread to `tracing` instead of stderr.
/// libxml2 2.9 keeps its handlers per thread, so every job that uses libxml2 calls this
/// first (cheap: a few stores); the first call also makes them the defaults for threads
/// that start using libxml2 later.
///
/// Structured reports (parser, namespaces, tree, c14n, output: all that libxml2 raises
/// through `__xmlRaiseError`) go to [`log_structured`]. The few printed through the
/// generic handler go to libxml2's own default handler, which `vfprintf`s them to its
/// context: a stream whose writes [`log_generic`] turns into `tracing` events (the
/// handler's type is C-variadic, which stable Rust cannot define).
pub(crate) fn route_errors_to_tracing() {
    let stream = generic_error_stream();
    static DEFAULTS: std::sync::Once = std::sync::Once::new();
    DEFAULTS.call_once(|| {
        // SAFETY: stores a function of the right type and a context as the defaults for
        // new threads, under libxml2's own lock; `log_structured` ignores its context, and
        // the generic context is a live `FILE` (or NULL, libxml2's stderr) as the default
        // generic handler expects.
        unsafe {
            xmlThrDefSetStructuredErrorFunc(std::ptr::null_mut(), Some(log_structured));
            if !stream.is_null() {
                xmlThrDefSetGenericErrorFunc(stream, None);
            }
        }
    });
    // SAFETY: as above, for the calling thread's handlers.
    unsafe {
        xmlSetStructuredErrorFunc(std::ptr::null_mut(), Some(log_structured));
        if !stream.is_null() {
            xmlSetGenericErrorFunc(stream, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_visits_every_element_once_in_order() -> Result<(), XmlError> {
        let doc = libxml::parser::Parser::default()
            .parse_string("<a><b><c/>t<d/></b><!-- x --><e/></a>")
            .map_err(XmlError::internal)?;
        let mut seen = Vec::new();
        walk(&doc, |e, depth, index| {
            seen.push((String::from_utf8_lossy(e.name()).into_owned(), depth, index));
            Ok(())
        })?;
        let expect = [
            ("a", 1, 0),
            ("b", 2, 0),
            ("c", 3, 0),
            ("d", 3, 1),
            ("e", 2, 1),
        ];
        let expect: Vec<_> = expect
            .iter()
            .map(|(n, d, i)| (n.to_string(), *d, *i))
            .collect();
        assert_eq!(seen, expect);
        Ok(())
    }

    #[test]
    fn c14n_of_a_subtree_is_that_subtree_with_its_inherited_namespaces() -> Result<(), XmlError> {
        let doc = libxml::parser::Parser::default()
            .parse_string(
                "<r xmlns:a=\"urn:a\" xmlns:z=\"urn:z\"><x>1</x><b><a:c q=\"1\">t<d/></a:c><!-- c --></b><y/></r>",
            )
            .map_err(XmlError::internal)?;
        let root = doc
            .get_root_element()
            .ok_or_else(|| XmlError::internal("root"))?;
        let b = root.get_child_elements()[1].clone();
        let mut out = Vec::new();
        exc_c14n(&doc, &b, &mut |chunk| out.extend_from_slice(chunk))?;
        assert_eq!(
            String::from_utf8_lossy(&out),
            "<b><a:c xmlns:a=\"urn:a\" q=\"1\">t<d></d></a:c></b>"
        );
        let mut alone = Vec::new();
        exc_c14n_alone(&b, &mut |chunk| alone.extend_from_slice(chunk))?;
        assert_eq!(alone, out);
        Ok(())
    }

    fn serialized(doc: &Document) -> Result<Vec<u8>, XmlError> {
        let mut out = Vec::new();
        serialize(doc, &mut out)?;
        Ok(out)
    }

    #[test]
    fn c14n_in_context_leaves_the_tree_as_it_was() -> Result<(), XmlError> {
        // Siblings before and after each ancestor, declaring and using the prefixes the
        // subtree uses, text around them, and nodes outside the document element. The
        // expected bytes are lxml's exclusive c14n of the same nodes.
        let xml = "<?pi before?><!-- c --><r xmlns:a=\"urn:a\" xml:lang=\"pl\">x<s xmlns:a=\"urn:other\"><a:u/></s>\
                   <m xmlns:b=\"urn:b\">y<b:n a:q=\"1\">t</b:n><a:k xmlns:a=\"urn:k\"/>z<o><a:p b:v=\"2\"/></o></m>w<e/></r><?pi after?>";
        let doc = libxml::parser::Parser::default()
            .parse_string(xml)
            .map_err(XmlError::internal)?;
        let before = serialized(&doc)?;
        let root = doc
            .get_root_element()
            .ok_or_else(|| XmlError::internal("root"))?;
        let m = root.get_child_elements()[1].clone();
        let o = m.get_child_elements()[2].clone();
        let p = o.get_child_elements()[0].clone();
        let c14n = |node: &Node| -> Result<String, XmlError> {
            let mut out = Vec::new();
            exc_c14n(&doc, node, &mut |chunk| out.extend_from_slice(chunk))?;
            Ok(String::from_utf8_lossy(&out).into_owned())
        };
        assert_eq!(
            c14n(&p)?,
            "<a:p xmlns:a=\"urn:a\" xmlns:b=\"urn:b\" b:v=\"2\"></a:p>"
        );
        assert_eq!(
            c14n(&o)?,
            "<o><a:p xmlns:a=\"urn:a\" xmlns:b=\"urn:b\" b:v=\"2\"></a:p></o>"
        );
        assert_eq!(
            c14n(&m)?,
            "<m>y<b:n xmlns:a=\"urn:a\" xmlns:b=\"urn:b\" a:q=\"1\">t</b:n><a:k xmlns:a=\"urn:k\"></a:k>z<o><a:p xmlns:a=\"urn:a\" xmlns:b=\"urn:b\" b:v=\"2\"></a:p></o></m>"
        );
        assert_eq!(serialized(&doc)?, before);
        // And the whole document, after the subtrees: every link is back.
        let mut whole = Vec::new();
        exc_c14n_document(&doc, &mut |chunk| whole.extend_from_slice(chunk))?;
        assert_eq!(
            String::from_utf8_lossy(&whole),
            "<?pi before?>\n<r xml:lang=\"pl\">x<s><a:u xmlns:a=\"urn:other\"></a:u></s><m>y<b:n xmlns:a=\"urn:a\" xmlns:b=\"urn:b\" a:q=\"1\">t</b:n><a:k xmlns:a=\"urn:k\"></a:k>z<o><a:p xmlns:a=\"urn:a\" xmlns:b=\"urn:b\" b:v=\"2\"></a:p></o></m>w<e></e></r>\n<?pi after?>"
        );
        Ok(())
    }

    /// What `tracing` events say while `f` runs on this thread.
    fn logged(f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(data);
                Ok(data.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn libxml2s_error_reports_go_to_tracing_escaped() -> Result<(), XmlError> {
        let doc = libxml::parser::Parser::default()
            .parse_string("<r xmlns:x=\"relative/uri\"><x:y/></r>")
            .map_err(XmlError::internal)?;
        let root = doc
            .get_root_element()
            .ok_or_else(|| XmlError::internal("root"))?;
        let log = logged(|| {
            route_errors_to_tracing();
            // c14n refuses a relative namespace URI (the walk refuses it before in real use).
            assert!(exc_c14n(&doc, &root, &mut |_| ()).is_err());
            // SAFETY: calls the thread's generic handler as libxml2 does, with a format
            // string and its one argument.
            unsafe {
                let handler = (*libxml::bindings::__xmlGenericError()).expect("a handler");
                let context = *libxml::bindings::__xmlGenericErrorContext();
                handler(
                    context,
                    c"generic report about '%s'\n".as_ptr(),
                    c"secret".as_ptr(),
                );
            }
        });
        assert!(
            log.contains("Relative namespace UR is invalid here"),
            "{log}"
        );
        assert!(log.contains("generic report about ..."), "{log}");
        assert!(!log.contains("secret"), "{log}");
        Ok(())
    }
}
