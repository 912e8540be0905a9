//! The process umask, read once without changing it, and the masking of permission bits that
//! come from the other machine: E's modes land on R (and R's on E) as that side's user would
//! have created them, never wider (a 0777 directory on E is not world-writable on R).

use std::sync::OnceLock;

/// The umask of this process: the `Umask:` line of `/proc/self/status`, read once.
///
/// Reading it through `umask(2)` means setting it to something else and back; in a
/// multithreaded process another thread creating a file in between would get the wrong mode.
/// That pair is only the fallback for kernels without the line (before Linux 4.7). zync never
/// changes its umask, so the first answer stays true.
pub fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| parse_status_umask(&status))
            .unwrap_or_else(umask_by_syscall)
    })
}

/// The umask in the text of a `/proc/<pid>/status` file (`Umask:\t0022`), if it has the line.
pub(crate) fn parse_status_umask(status: &str) -> Option<u32> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix("Umask:")?.trim();
        u32::from_str_radix(value, 8).ok().map(|mask| mask & 0o777)
    })
}

/// The racy fallback: `umask(2)` can only be read by setting it. The value set meanwhile is
/// 077, so a file another thread creates in that instant is too private rather than too open.
fn umask_by_syscall() -> u32 {
    // SAFETY: umask cannot fail; the old value is restored at once.
    let old = unsafe { libc::umask(0o077) };
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    old & 0o777
}

/// `mode` as this side applies a mode that came from the other machine: permission bits only
/// (setuid, setgid and sticky are stripped: they would let R's or E's files run with their
/// owner's rights), narrowed by this process's [`umask`].
pub fn mask_mode(mode: u32) -> u32 {
    mask_with(mode, umask())
}

/// [`mask_mode`] with an explicit umask.
pub fn mask_with(mode: u32, umask: u32) -> u32 {
    mode & 0o777 & !umask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_umask_line_is_read_as_octal() {
        let status = "Name:\tzync\nUmask:\t0027\nState:\tR (running)\n";
        assert_eq!(parse_status_umask(status), Some(0o027));
        assert_eq!(parse_status_umask("Umask: 0000\n"), Some(0));
        assert_eq!(parse_status_umask("Name:\tzync\nState:\tR\n"), None);
        assert_eq!(parse_status_umask("Umask:\tnonsense\n"), None);
    }

    #[test]
    fn the_umask_of_a_real_process_is_read() {
        // A child with a known umask reads its own status: the real format, not a sample.
        for (set, want) in [("027", 0o027), ("000", 0o000), ("077", 0o077)] {
            let out = std::process::Command::new("sh")
                .args(["-c", &format!("umask {set}; exec cat /proc/self/status")])
                .output()
                .expect("run sh");
            let status = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                parse_status_umask(&status),
                Some(want),
                "umask {set}, status:\n{status}"
            );
        }
        // This process's answer is its status line's.
        let own = std::fs::read_to_string("/proc/self/status").expect("status");
        assert_eq!(Some(umask()), parse_status_umask(&own));
    }

    #[test]
    fn modes_from_the_other_side_are_narrowed_by_the_umask() {
        for (mode, mask, want) in [
            (0o777, 0o022, 0o755),
            (0o755, 0o022, 0o755),
            (0o666, 0o022, 0o644),
            (0o644, 0o077, 0o600),
            (0o4755, 0o022, 0o755),
            (0o102_775, 0o002, 0o775),
            (0o7777, 0o000, 0o777),
            (0o040_777, 0o027, 0o750),
        ] {
            assert_eq!(
                mask_with(mode, mask),
                want,
                "mode {mode:o} under umask {mask:03o}: expected {want:o}, got {:o}",
                mask_with(mode, mask)
            );
        }
        assert_eq!(mask_mode(0o7777), 0o777 & !umask());
    }
}
