//! The engine thread's place in the CPU scheduler.
//!
//! A turn is a few tens of microseconds of work every 1 to 10 ms, and what matters is that it
//! starts on time: when every core is busy (Prometheus scraping, Node rendering), a waking
//! engine thread waited for the running task's slice to end. Since Linux 6.12 a fair-class
//! thread may ask for a shorter slice (`sched_attr.sched_runtime`, 0.1 to 100 ms); a waking
//! task with a shorter slice than the running one preempts it. No privilege is needed and
//! the thread's share of the CPU does not change (its weight, from nice, stays). Older
//! kernels ignore the field for the fair class.
use std::io;

/// `struct sched_attr` as of Linux 4.x (SCHED_ATTR_SIZE_VER0, 48 bytes): what
/// `sched_getattr` fills and `sched_setattr` takes. libc 0.2 does not define it.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

const SCHED_ATTR_SIZE_VER0: u32 = 48;
const SCHED_OTHER: u32 = 0;

/// The slice the engine thread asks for: the kernel's shortest.
pub const ENGINE_SLICE_NS: u64 = 100_000;

/// Asks the scheduler for a `slice_ns` slice for the calling thread, keeping its policy
/// and nice. Only for the fair class (`SCHED_OTHER`); a thread someone moved to another
/// class (`chrt`) is left alone. Returns whether the request was made.
pub fn request_slice(slice_ns: u64) -> io::Result<bool> {
    let mut attr = SchedAttr { size: SCHED_ATTR_SIZE_VER0, ..SchedAttr::default() };
    // SAFETY: sched_getattr writes at most `size` bytes into `attr`, which is that large;
    // pid 0 is the calling thread.
    let got =
        unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, SCHED_ATTR_SIZE_VER0, 0) };
    if got != 0 {
        return Err(io::Error::last_os_error());
    }
    if attr.policy != SCHED_OTHER {
        return Ok(false);
    }
    attr.size = SCHED_ATTR_SIZE_VER0;
    attr.runtime = slice_ns;
    // SAFETY: sched_setattr reads `size` bytes of `attr`; pid 0 is the calling thread.
    let set = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// The calling thread's slice as the kernel reports it (`sched_runtime`; 0 where the kernel
/// keeps no custom slice for the fair class).
pub fn current_slice() -> io::Result<u64> {
    let mut attr = SchedAttr::default();
    // SAFETY: as in `request_slice`.
    let got =
        unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut SchedAttr, SCHED_ATTR_SIZE_VER0, 0) };
    if got != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr.runtime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_kernels() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), SCHED_ATTR_SIZE_VER0 as usize);
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_and_keeps_its_nice() {
        std::thread::spawn(|| {
            // SAFETY: setpriority on the calling thread (who = 0) with an integer.
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 3) };
            assert!(request_slice(ENGINE_SLICE_NS).expect("sched_setattr"));
            // SAFETY: getpriority on the calling thread.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            assert_eq!(nice, 3);
            let slice = current_slice().expect("sched_getattr");
            // Kernels before 6.12 keep no custom slice and report 0.
            assert!(slice == ENGINE_SLICE_NS || slice == 0, "slice {slice}");
        })
        .join()
        .expect("test thread");
    }
}
