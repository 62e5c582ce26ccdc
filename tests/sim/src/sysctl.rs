// SPDX-License-Identifier: BSD-2-Clause
//! sysctl(9) tree (sys/sysctl.h 1.236; docs/kernel-interfaces.md §6).
//!
//! Nodes are kept in an arena; each has a stable, heap-allocated C
//! `struct sysctlnode` (what `*cnode` and handlers' `rnode` point at), with
//! `sysctl_flags` = flags | type as in the real tree. Tree changes
//! (create, teardown) take `TREE` for writing. Handler calls take it as
//! sysctl(2) takes `sysctl_treelock` (kern_sysctl.c 1.257
//! `sys___sysctl`: `sysctl_lock(newv != NULL)`, held across
//! `sysctl_dispatch` and so across the node's handler): a read as a
//! reader, a write as the writer. A handler that blocks during a write
//! therefore blocks every other sysctl, reads included. Handlers run with
//! no simulator state lock held.

use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_uint, c_void};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::kernel::{kernel_panic, with};
use crate::xen::cstr;

const EPERM: c_int = 1;
const ENOENT: c_int = 2;
const ENOMEM: c_int = 12;
const EEXIST: c_int = 17;
const ENOTDIR: c_int = 20;
const EINVAL: c_int = 22;
const EOPNOTSUPP: c_int = 45;
const ENAMETOOLONG: c_int = 63;
const ENOTEMPTY: c_int = 66;

const CTL_CREATE: c_int = -3;
pub(crate) const CTLTYPE_NODE: u32 = 1;
pub(crate) const CTLTYPE_INT: u32 = 2;
pub(crate) const CTLTYPE_STRING: u32 = 3;
pub(crate) const CTLTYPE_QUAD: u32 = 4;
pub(crate) const CTLTYPE_STRUCT: u32 = 5;
pub(crate) const CTLTYPE_BOOL: u32 = 6;
const SYSCTL_TYPEMASK: u32 = 0xf;
const CTLFLAG_READWRITE: u32 = 0x70;
const CTLFLAG_PERMANENT: u32 = 0x200;
const SYSCTL_NAMELEN: usize = 32;
/// Dynamic node numbers start here (host only).
const FIRST_DYNAMIC: i32 = 1000;

pub(crate) type SysctlFn = unsafe extern "C" fn(
    *const c_int,
    c_uint,
    *mut c_void,
    *mut usize,
    *const c_void,
    usize,
    *const c_int,
    *mut c_void,
    *const SysctlNodeC,
) -> c_int;

/// The C `struct sysctlnode` of balloon_host_kernel.h.
#[repr(C)]
pub(crate) struct SysctlNodeC {
    pub flags: u32,
    pub num: i32,
    pub name: [c_char; SYSCTL_NAMELEN],
    pub data: *mut c_void,
    pub size: usize,
    pub func: Option<SysctlFn>,
    pub desc: *const c_char,
    pub sim_node: *mut c_void,
}

pub(crate) struct Node {
    pub c: *mut SysctlNodeC,
    pub name: String,
    pub desc: Option<CString>,
    pub parent: usize,
    pub children: Vec<usize>,
    pub boot: bool,
}

#[derive(Default)]
pub(crate) struct SysctlTree {
    pub nodes: Vec<Option<Node>>,
    pub next_num: i32,
}

/// The opaque `struct sysctllog`: the nodes created through it, in order.
struct SysctlLog {
    ids: Vec<usize>,
}

static TREE: RwLock<()> = RwLock::new(());

fn tree_write() -> RwLockWriteGuard<'static, ()> {
    TREE.write().unwrap_or_else(|e| e.into_inner())
}

fn tree_read() -> RwLockReadGuard<'static, ()> {
    TREE.read().unwrap_or_else(|e| e.into_inner())
}

/// `sysctl_treelock` as one sysctl(2) call holds it.
enum TreeGuard {
    Reader(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Writer(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

impl SysctlTree {
    /// The boot tree: the root, hw (CTL_HW 6), machdep (7) and kern (1).
    pub(crate) fn boot() -> Self {
        let mut t = SysctlTree {
            nodes: Vec::new(),
            next_num: FIRST_DYNAMIC,
        };
        t.add(
            usize::MAX,
            "",
            0,
            CTLTYPE_NODE | CTLFLAG_PERMANENT,
            None,
            true,
        );
        for (name, num) in [("kern", 1), ("hw", 6), ("machdep", 7)] {
            t.add(0, name, num, CTLTYPE_NODE | CTLFLAG_PERMANENT, None, true);
        }
        t
    }

    /// The machdep.xen nodes NetBSD's own Xen code creates at boot:
    /// machdep.xen.version in every kernel that attaches hypervisor0 (PV and
    /// PVH; hypervisor.c 1.96 hypervisor_attach), machdep.xen.suspend in
    /// XENPV domUs only (sysctl_xen_suspend_setup() is called under #ifdef
    /// XENPV: xen_machdep.c, hypervisor_machdep.c). The suspend node is
    /// read-only here (writing it would suspend the domain).
    pub(crate) fn boot_xen(&mut self, pv: bool) {
        static VERSION: &[u8] = b"4.17\0";
        static SUSPEND: i32 = 0;
        let Some(machdep) = self.child_by_name(0, "machdep") else {
            return;
        };
        let xen = self.add(
            machdep,
            "xen",
            FIRST_DYNAMIC - 1,
            CTLTYPE_NODE | CTLFLAG_PERMANENT,
            None,
            true,
        );
        let leaf = |t: &mut Self, name: &str, num, ty, data: *const c_void, size| {
            let id = t.add(xen, name, num, ty | CTLFLAG_PERMANENT, None, true);
            let c = t.node(id).expect("just added").c;
            // SAFETY: the node was just allocated by add; the data is static.
            unsafe {
                (*c).data = data as *mut c_void;
                (*c).size = size;
            }
        };
        leaf(
            self,
            "version",
            1,
            CTLTYPE_STRING,
            VERSION.as_ptr() as *const c_void,
            VERSION.len(),
        );
        if pv {
            leaf(
                self,
                "suspend",
                2,
                CTLTYPE_INT,
                &SUSPEND as *const i32 as *const c_void,
                4,
            );
        }
    }

    fn add(
        &mut self,
        parent: usize,
        name: &str,
        num: i32,
        flags: u32,
        desc: Option<CString>,
        boot: bool,
    ) -> usize {
        let id = self.nodes.len();
        let mut cname = [0 as c_char; SYSCTL_NAMELEN];
        for (d, s) in cname.iter_mut().zip(name.bytes()) {
            *d = s as c_char;
        }
        let c = Box::into_raw(Box::new(SysctlNodeC {
            flags,
            num,
            name: cname,
            data: std::ptr::null_mut(),
            size: 0,
            func: None,
            desc: desc.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
            sim_node: id as *mut c_void,
        }));
        self.nodes.push(Some(Node {
            c,
            name: name.to_string(),
            desc,
            parent,
            children: Vec::new(),
            boot,
        }));
        if let Some(Some(p)) = self.nodes.get_mut(parent) {
            p.children.push(id);
        }
        id
    }

    fn node(&self, id: usize) -> Option<&Node> {
        self.nodes.get(id).and_then(|n| n.as_ref())
    }

    fn cnode(&self, id: usize) -> &SysctlNodeC {
        // SAFETY: a live node's C struct stays allocated until destroyed.
        unsafe { &*self.node(id).expect("live node").c }
    }

    fn child_by_num(&self, id: usize, num: i32) -> Option<usize> {
        let n = self.node(id)?;
        n.children
            .iter()
            .copied()
            .find(|&c| self.cnode(c).num == num)
    }

    fn child_by_name(&self, id: usize, name: &str) -> Option<usize> {
        let n = self.node(id)?;
        n.children
            .iter()
            .copied()
            .find(|&c| self.node(c).is_some_and(|x| x.name == name))
    }

    fn destroy(&mut self, id: usize) -> c_int {
        let Some(n) = self.node(id) else {
            return ENOENT;
        };
        if !n.children.is_empty() {
            return ENOTEMPTY;
        }
        let n = self.nodes[id].take().expect("checked");
        if let Some(Some(p)) = self.nodes.get_mut(n.parent) {
            p.children.retain(|&c| c != id);
        }
        // SAFETY: reclaiming the Box leaked in `add`.
        drop(unsafe { Box::from_raw(n.c) });
        0
    }

    /// Frees every node (domain teardown).
    pub(crate) fn free_all(&mut self) {
        for n in self.nodes.drain(..).flatten() {
            // SAFETY: reclaiming the Box leaked in `add`.
            drop(unsafe { Box::from_raw(n.c) });
        }
    }

    pub(crate) fn full_name(&self, mut id: usize) -> String {
        let mut parts = Vec::new();
        while id != 0 {
            let Some(n) = self.node(id) else { break };
            parts.push(n.name.clone());
            id = n.parent;
        }
        parts.reverse();
        parts.join(".")
    }

    /// Resolves "hw.balloon.target" to (id, mib).
    pub(crate) fn resolve(&self, name: &str) -> Option<(usize, Vec<c_int>)> {
        let mut id = 0;
        let mut mib = Vec::new();
        for part in name.split('.') {
            id = self.child_by_name(id, part)?;
            mib.push(self.cnode(id).num);
        }
        Some((id, mib))
    }

    /// Every dynamic (created after boot) node still present.
    pub(crate) fn leaked(&self) -> Vec<String> {
        (0..self.nodes.len())
            .filter(|&i| self.node(i).is_some_and(|n| !n.boot))
            .map(|i| self.full_name(i))
            .collect()
    }

    pub(crate) fn list(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = (1..self.nodes.len())
            .filter(|&i| self.node(i).is_some())
            .map(|i| self.full_name(i))
            .filter(|n| n.starts_with(prefix))
            .collect();
        v.sort();
        v
    }

    pub(crate) fn describe(&self, name: &str) -> Option<String> {
        let (id, _) = self.resolve(name)?;
        self.node(id)?
            .desc
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned())
    }
}

fn type_size(ty: u32) -> usize {
    match ty {
        CTLTYPE_INT => 4,
        CTLTYPE_QUAD => 8,
        CTLTYPE_BOOL => 1,
        CTLTYPE_NODE => std::mem::size_of::<SysctlNodeC>(),
        _ => 0,
    }
}

/// The Rust half of sysctl_createv (the C wrapper collected the MIB).
/// The parent path is resolved by number from `*rnode` (or the root when
/// rnode or *rnode is NULL); the last element is CTL_CREATE (a new number
/// from 1000 up) or an explicit number. Names are unique among siblings
/// (EEXIST), at most SYSCTL_NAMELEN-1 characters of [A-Za-z0-9_-];
/// CTLFLAG_PERMANENT after boot is EPERM (kern_sysctl.c sysctl_create).
/// Fault injection: `sysctl_create_fail_after` makes a create fail with
/// ENOMEM, which kern_sysctl.c returns when it cannot allocate the node.
#[no_mangle]
unsafe extern "C" fn sim_rs_sysctl_create(
    log: *mut *mut c_void,
    _cflags: c_int,
    rnode: *const *const SysctlNodeC,
    cnode: *mut *const SysctlNodeC,
    flags: c_int,
    ty: c_int,
    name: *const c_char,
    desc: *const c_char,
    func: Option<SysctlFn>,
    _qv: u64,
    newp: *mut c_void,
    newlen: usize,
    mib: *const c_int,
    miblen: c_int,
) -> c_int {
    if name.is_null() || miblen < 1 {
        return EINVAL;
    }
    // SAFETY: the C wrapper passes miblen collected ints.
    let mib = unsafe { std::slice::from_raw_parts(mib, miblen as usize) }.to_vec();
    // SAFETY: NUL-terminated strings (desc may be NULL).
    let (name, desc) = unsafe { (cstr(name), (!desc.is_null()).then(|| cstr(desc))) };
    // SAFETY: rnode is NULL or points at a node pointer (NULL or live).
    let base = unsafe {
        if rnode.is_null() || (*rnode).is_null() {
            0
        } else {
            (**rnode).sim_node as usize
        }
    };
    let ty = ty as u32;
    let flags = flags as u32;
    let _w = tree_write();
    let res = with(|k| -> Result<*const SysctlNodeC, c_int> {
        if crate::config::fail_now(&mut k.faults.sysctl_create_fail_after) {
            k.faults_fired += 1;
            return Err(ENOMEM);
        }
        let t = &mut k.sysctl;
        if t.node(base).is_none() {
            return Err(ENOENT);
        }
        let mut parent = base;
        for &num in &mib[..mib.len() - 1] {
            parent = t.child_by_num(parent, num).ok_or(ENOENT)?;
            if t.cnode(parent).flags & SYSCTL_TYPEMASK != CTLTYPE_NODE {
                return Err(ENOTDIR);
            }
        }
        if t.cnode(parent).flags & SYSCTL_TYPEMASK != CTLTYPE_NODE {
            return Err(ENOTDIR);
        }
        if flags & CTLFLAG_PERMANENT != 0 && k.booted {
            return Err(EPERM);
        }
        if !(CTLTYPE_NODE..=CTLTYPE_BOOL).contains(&ty) || flags & SYSCTL_TYPEMASK != 0 {
            return Err(EINVAL);
        }
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(EINVAL);
        }
        if name.len() >= SYSCTL_NAMELEN {
            return Err(ENAMETOOLONG);
        }
        if t.child_by_name(parent, &name).is_some() {
            return Err(EEXIST);
        }
        let last = *mib.last().expect("miblen >= 1");
        let num = if last == CTL_CREATE {
            t.next_num += 1;
            t.next_num - 1
        } else if last < 0 {
            return Err(EINVAL);
        } else {
            if t.child_by_num(parent, last).is_some() {
                return Err(EEXIST);
            }
            last
        };
        let size = if newlen != 0 {
            newlen
        } else if ty == CTLTYPE_STRING {
            if newp.is_null() {
                return Err(EINVAL);
            }
            // SAFETY: a STRING node's data is a NUL-terminated buffer.
            unsafe { cstr(newp as *const c_char) }.len() + 1
        } else {
            type_size(ty)
        };
        let cdesc = desc.and_then(|d| CString::new(d).ok());
        let id = t.add(parent, &name, num, flags | ty, cdesc, !k.booted);
        let c = t.node(id).expect("just added").c;
        // SAFETY: c is the node's live C struct.
        unsafe {
            (*c).data = newp;
            (*c).size = size;
            (*c).func = func;
        }
        if !log.is_null() {
            // SAFETY: log is the caller's `struct sysctllog *` variable,
            // NULL or a SysctlLog made here.
            unsafe {
                if (*log).is_null() {
                    *log = Box::into_raw(Box::new(SysctlLog { ids: Vec::new() })) as *mut c_void;
                }
                (*(*log as *mut SysctlLog)).ids.push(id);
            }
        }
        Ok(c)
    });
    match res {
        Ok(c) => {
            if !cnode.is_null() {
                // SAFETY: cnode is the caller's out-parameter.
                unsafe { *cnode = c };
            }
            0
        }
        Err(e) => e,
    }
}

/// sysctl_teardown(9): destroys the logged nodes in reverse order (a node
/// that still has children stays) and sets *log = NULL.
#[no_mangle]
unsafe extern "C" fn sysctl_teardown(log: *mut *mut c_void) {
    // SAFETY: log is the caller's `struct sysctllog *` variable.
    if log.is_null() || unsafe { (*log).is_null() } {
        return;
    }
    // SAFETY: *log was made by sim_rs_sysctl_create.
    let l = unsafe { Box::from_raw(*log as *mut SysctlLog) };
    // SAFETY: as above.
    unsafe { *log = std::ptr::null_mut() };
    let _w = tree_write();
    with(|k| {
        for &id in l.ids.iter().rev() {
            k.sysctl.destroy(id);
        }
    });
}

/// sysctl_lookup(9): copies the value at rnode->sysctl_data out to oldp
/// (respecting *oldlenp, which is set to the value's size; ENOMEM when
/// truncated) and, when newp is set, checks and copies the new value in:
/// EPERM on a read-only node, EINVAL for a wrong size (INT 4, QUAD 8,
/// BOOL 1 with value 0/1, STRUCT = size, STRING < size incl. NUL).
#[no_mangle]
unsafe extern "C" fn sysctl_lookup(
    _name: *const c_int,
    _namelen: c_uint,
    oldp: *mut c_void,
    oldlenp: *mut usize,
    newp: *const c_void,
    newlen: usize,
    _oname: *const c_int,
    _l: *mut c_void,
    rnode: *const SysctlNodeC,
) -> c_int {
    if rnode.is_null() {
        kernel_panic("sysctl_lookup: NULL rnode");
    }
    // SAFETY: rnode points at a (possibly copied) struct sysctlnode.
    let n = unsafe { &*rnode };
    let ty = n.flags & SYSCTL_TYPEMASK;
    if ty == CTLTYPE_NODE || n.data.is_null() {
        return EOPNOTSUPP;
    }
    let cur = if ty == CTLTYPE_STRING {
        // SAFETY: a STRING node's data holds a NUL-terminated string within
        // its size.
        let s = unsafe { std::slice::from_raw_parts(n.data as *const u8, n.size) };
        s.iter().position(|&b| b == 0).map_or(n.size, |p| p + 1)
    } else {
        n.size
    };
    let mut error = 0;
    if !oldlenp.is_null() {
        // SAFETY: oldlenp is the caller's size_t.
        let room = unsafe { *oldlenp };
        if !oldp.is_null() {
            let c = room.min(cur);
            // SAFETY: oldp has room bytes; data has cur bytes.
            unsafe { std::ptr::copy_nonoverlapping(n.data as *const u8, oldp as *mut u8, c) };
            if c < cur {
                error = ENOMEM;
            }
        }
        // SAFETY: as above.
        unsafe { *oldlenp = cur };
    }
    if error != 0 || newp.is_null() {
        return error;
    }
    if n.flags & CTLFLAG_READWRITE == 0 {
        return EPERM;
    }
    // SAFETY: newp has newlen bytes.
    let new = unsafe { std::slice::from_raw_parts(newp as *const u8, newlen) };
    let ok = match ty {
        CTLTYPE_INT => newlen == 4,
        CTLTYPE_QUAD => newlen == 8,
        CTLTYPE_BOOL => newlen == 1 && new[0] <= 1,
        CTLTYPE_STRUCT => newlen == n.size,
        CTLTYPE_STRING => {
            let len = new.iter().position(|&b| b == 0).unwrap_or(newlen);
            len < n.size
        }
        _ => false,
    };
    if !ok {
        return EINVAL;
    }
    if ty == CTLTYPE_STRING {
        let len = new.iter().position(|&b| b == 0).unwrap_or(newlen);
        // SAFETY: len + 1 <= size bytes fit in data.
        unsafe {
            std::ptr::copy_nonoverlapping(new.as_ptr(), n.data as *mut u8, len);
            *(n.data as *mut u8).add(len) = 0;
        }
    } else {
        // SAFETY: newlen bytes fit in data (size checked above).
        unsafe { std::ptr::copy_nonoverlapping(new.as_ptr(), n.data as *mut u8, newlen) };
    }
    0
}

/// A sysctl value as the test API sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SysctlValue {
    Int(i32),
    Quad(i64),
    Bool(bool),
    String(String),
}

impl SysctlValue {
    fn bytes(&self) -> Vec<u8> {
        match self {
            SysctlValue::Int(v) => v.to_ne_bytes().to_vec(),
            SysctlValue::Quad(v) => v.to_ne_bytes().to_vec(),
            SysctlValue::Bool(b) => vec![u8::from(*b)],
            SysctlValue::String(s) => {
                let mut v = s.as_bytes().to_vec();
                v.push(0);
                v
            }
        }
    }
}

/// Calls a node's handler as the sysctl(2) path would: on the calling
/// thread, with the tree locked as `sys___sysctl` locks `sysctl_treelock`
/// (kern_sysctl.c 1.257: `sysctl_lock(newv != NULL)`, so as the writer
/// when a new value is given, as a reader otherwise) until the handler
/// returns, and no simulator lock held, l = NULL,
/// name = the MIB past the node (namelen 0), oname = the full MIB.
/// Returns the type and the bytes read (if `read`).
pub(crate) fn call(name: &str, new: Option<&[u8]>, read: bool) -> Result<(u32, Vec<u8>), i32> {
    let _tree = match new {
        Some(_) => TreeGuard::Writer(tree_write()),
        None => TreeGuard::Reader(tree_read()),
    };
    let (c, mib) = with(|k| {
        let (id, mib) = k.sysctl.resolve(name)?;
        Some((k.sysctl.node(id)?.c as usize, mib))
    })
    .ok_or(ENOENT)?;
    let c = c as *const SysctlNodeC;
    // SAFETY: the node is live while the tree lock is held.
    let (flags, size, func) = unsafe { ((*c).flags, (*c).size, (*c).func) };
    let ty = flags & SYSCTL_TYPEMASK;
    if ty == CTLTYPE_NODE {
        return Err(EOPNOTSUPP);
    }
    let mut buf = vec![0u8; size.max(1024)];
    let mut oldlen = buf.len();
    let (oldp, oldlenp) = if read {
        (buf.as_mut_ptr() as *mut c_void, &mut oldlen as *mut usize)
    } else {
        (std::ptr::null_mut(), std::ptr::null_mut())
    };
    let (newp, newlen) = match new {
        Some(b) => (b.as_ptr() as *const c_void, b.len()),
        None => (std::ptr::null(), 0),
    };
    let f: SysctlFn = func.unwrap_or(sysctl_lookup);
    // SAFETY: calling the node's handler with valid buffers, as the
    // kernel's sysctl dispatch would.
    let e = unsafe {
        f(
            mib.as_ptr().add(mib.len()),
            0,
            oldp,
            oldlenp,
            newp,
            newlen,
            mib.as_ptr(),
            std::ptr::null_mut(),
            c,
        )
    };
    crate::kernel::notify_changed();
    if e != 0 {
        return Err(e);
    }
    buf.truncate(oldlen.min(buf.len()));
    Ok((ty, buf))
}

pub(crate) fn read(name: &str) -> Result<SysctlValue, i32> {
    let (ty, b) = call(name, None, true)?;
    let v = match ty {
        CTLTYPE_INT if b.len() >= 4 => {
            SysctlValue::Int(i32::from_ne_bytes(b[..4].try_into().unwrap()))
        }
        CTLTYPE_QUAD if b.len() >= 8 => {
            SysctlValue::Quad(i64::from_ne_bytes(b[..8].try_into().unwrap()))
        }
        CTLTYPE_BOOL if !b.is_empty() => SysctlValue::Bool(b[0] != 0),
        CTLTYPE_STRING => {
            let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
            SysctlValue::String(String::from_utf8_lossy(&b[..end]).into_owned())
        }
        _ => return Err(EINVAL),
    };
    Ok(v)
}

pub(crate) fn write(name: &str, v: &SysctlValue) -> Result<(), i32> {
    call(name, Some(&v.bytes()), false).map(|_| ())
}

pub(crate) fn write_raw(name: &str, b: &[u8]) -> Result<(), i32> {
    call(name, Some(b), false).map(|_| ())
}
