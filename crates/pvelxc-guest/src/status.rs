//! Exit statuses: `waitpid` status decoding and runc's codes for a failed exec.

/// runc-compatible exit status for an exec failure errno: 127 "not found", 126 else.
pub fn exec_failure_code(errno: i32) -> i32 {
    if errno == libc::ENOENT || errno == libc::ENOTDIR {
        127
    } else {
        126
    }
}

/// (exit_code, signal) of a `waitpid` status: exit_code = 128+sig when signalled.
pub fn decode_wait_status(status: libc::c_int) -> (i32, Option<i32>) {
    if libc::WIFSIGNALED(status) {
        let s = libc::WTERMSIG(status);
        (128 + s, Some(s))
    } else if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), None)
    } else {
        (255, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exec_failure_code(libc::ENOENT), 127);
        assert_eq!(exec_failure_code(libc::ENOTDIR), 127);
        assert_eq!(exec_failure_code(libc::EACCES), 126);
        assert_eq!(exec_failure_code(libc::ENOEXEC), 126);
        // status encodings as waitpid returns them
        assert_eq!(decode_wait_status(3 << 8), (3, None));
        assert_eq!(decode_wait_status(9), (137, Some(9)));
        assert_eq!(decode_wait_status(15 | 0x80), (143, Some(15))); // core dumped bit
        assert_eq!(decode_wait_status(0x7f), (255, None)); // stopped
    }
}
