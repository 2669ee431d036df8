//! VMID validation exactly like PVE::JSONSchema's `pve-vmid` format.

/// Message PVE prints (after `vmid: `) for a malformed VMID.
pub const VMID_FORMAT_ERR: &str = "invalid format - value does not look like a valid VM ID";

/// Parse a VMID: regex `^[1-9][0-9]{2,8}$`, then range 100..=999999999.
pub fn parse_vmid(s: &str) -> Result<u32, String> {
    let b = s.as_bytes();
    let shape_ok = (3..=9).contains(&b.len())
        && (b'1'..=b'9').contains(&b[0])
        && b.iter().all(u8::is_ascii_digit);
    if !shape_ok {
        return Err(VMID_FORMAT_ERR.to_string());
    }
    match s.parse::<u32>() {
        Ok(v) if (100..=999_999_999).contains(&v) => Ok(v),
        _ => Err(VMID_FORMAT_ERR.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid() {
        assert_eq!(parse_vmid("100"), Ok(100));
        assert_eq!(parse_vmid("999999999"), Ok(999_999_999));
        assert_eq!(parse_vmid("123456"), Ok(123_456));
    }

    #[test]
    fn invalid() {
        for s in [
            "",
            "99",
            "099",
            "0100",
            "1000000000",
            "abc",
            "10a",
            "-100",
            "+100",
            " 100",
            "100 ",
            "1e3",
        ] {
            assert_eq!(parse_vmid(s), Err(VMID_FORMAT_ERR.to_string()), "{s:?}");
        }
    }
}
