//! The message of a caught panic, whatever its payload type.

/// The text a panic was raised with (`panic!("…")` gives a `&str` or a `String`), or `fallback`.
pub fn panic_message(payload: &(dyn std::any::Any + Send), fallback: &str) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| fallback.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn both_payload_types_and_others() {
        let p = std::panic::catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(super::panic_message(p.as_ref(), "?"), "plain");
        let n = 3;
        let p = std::panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(super::panic_message(p.as_ref(), "?"), "formatted 3");
        let p = std::panic::catch_unwind(|| std::panic::panic_any(7u8)).unwrap_err();
        assert_eq!(super::panic_message(p.as_ref(), "?"), "?");
    }
}
