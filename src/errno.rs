//! Error numbers, as NetBSD defines them in `sys/errno.h`.
//!
//! The core reports failures in the kernel's own terms so the shim can
//! return them from sysctl handlers and modcmd unchanged. Values are
//! NetBSD's (sys/sys/errno.h, NetBSD-current 2026); where Linux differs
//! the host simulator still uses these, because they are what the module
//! returns to its caller, not what the host libc would.

/// A NetBSD error number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    /// Operation not permitted: a value outside the safe range.
    pub const EPERM: Errno = Errno(1);
    /// No such file or directory: a xenstore node that is not there.
    pub const ENOENT: Errno = Errno(2);
    /// Input/output error: a hypercall failed outright.
    pub const EIO: Errno = Errno(5);
    /// Out of memory.
    pub const ENOMEM: Errno = Errno(12);
    /// Bad address: a hypercall could not read its argument (Xen's
    /// do_memory_op returns -EFAULT; Xen's errno numbers agree with
    /// NetBSD's up to 34).
    pub const EFAULT: Errno = Errno(14);
    /// Device busy: unload refused while memory is still ballooned.
    pub const EBUSY: Errno = Errno(16);
    /// File exists: a range the kernel placed overlaps what the driver
    /// holds (uvm_physseg_hotplug_add's overlap answer too).
    pub const EEXIST: Errno = Errno(17);
    /// Operation not supported by device: a growth interface the kernel
    /// lacks was asked for.
    pub const ENODEV: Errno = Errno(19);
    /// Invalid argument: a malformed value.
    pub const EINVAL: Errno = Errno(22);
    /// No space left: no frame space left to plug a segment into.
    pub const ENOSPC: Errno = Errno(28);
    /// Result too large: a value that does not fit.
    pub const ERANGE: Errno = Errno(34);
    /// Resource temporarily unavailable: a short result to retry.
    pub const EAGAIN: Errno = Errno(35);
    /// Operation not supported: e.g. hotplug without UVM_HOTPLUG.
    pub const EOPNOTSUPP: Errno = Errno(45);
    /// Inappropriate file type or format: xenstore held garbage.
    pub const EFTYPE: Errno = Errno(79);

    /// The symbolic name, as errno.h spells it, or `"E?"` for a number
    /// this driver never reports.
    pub fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::ENOENT => "ENOENT",
            Errno::EIO => "EIO",
            Errno::ENOMEM => "ENOMEM",
            Errno::EFAULT => "EFAULT",
            Errno::EBUSY => "EBUSY",
            Errno::EEXIST => "EEXIST",
            Errno::ENODEV => "ENODEV",
            Errno::EINVAL => "EINVAL",
            Errno::ENOSPC => "ENOSPC",
            Errno::ERANGE => "ERANGE",
            Errno::EAGAIN => "EAGAIN",
            Errno::EOPNOTSUPP => "EOPNOTSUPP",
            Errno::EFTYPE => "EFTYPE",
            _ => "E?",
        }
    }
}

impl core::fmt::Display for Errno {
    /// `ENOMEM (12)`: the name for people, the number for errno(2).
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}
