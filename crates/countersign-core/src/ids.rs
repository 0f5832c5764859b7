//! Public ids: a type prefix and a UUIDv7 in lowercase Crockford base32 (`usr_01j…`), so ids
//! sort by creation time and say what they name.
use uuid::Uuid;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

pub const USER: &str = "usr";
pub const AGENT: &str = "agt";
pub const API_KEY: &str = "key";
pub const APPROVAL: &str = "apr";
pub const AUDIT: &str = "aud";
pub const SESSION: &str = "ses";
pub const LOGIN_LINK: &str = "lnk";
pub const PASSKEY: &str = "pky";

/// A fresh id with the given prefix.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", encode(Uuid::now_v7()))
}

fn encode(uuid: Uuid) -> String {
    let value = uuid.as_u128();
    // 26 characters of 5 bits hold 130 bits; the first carries the top 3.
    (0..26)
        .map(|i| {
            let shift = 125 - 5 * i;
            ALPHABET[((value >> shift) & 0x1f) as usize] as char
        })
        .collect()
}

/// The UUID inside an id of any prefix, when `s` is an id this module made.
pub fn uuid_of(s: &str) -> Option<Uuid> {
    let (_, rest) = s.split_once('_')?;
    if rest.len() != 26 {
        return None;
    }
    let mut value: u128 = 0;
    for (i, b) in rest.bytes().enumerate() {
        let digit = ALPHABET.iter().position(|a| *a == b)? as u128;
        // The first character carries only the top 3 bits.
        if i == 0 && digit > 7 {
            return None;
        }
        value = (value << 5) | digit;
    }
    Some(Uuid::from_u128(value))
}

/// Whether `s` has the shape of an id with this prefix (it may still name nothing).
pub fn is_id(s: &str, prefix: &str) -> bool {
    match s.split_once('_') {
        Some((p, rest)) => {
            p == prefix && rest.len() == 26 && rest.bytes().all(|b| ALPHABET.contains(&b))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_prefix_and_sort_by_time() {
        let a = new_id(APPROVAL);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id(APPROVAL);
        assert!(is_id(&a, APPROVAL));
        assert!(!is_id(&a, USER));
        assert!(a < b);
        assert_eq!(a.len(), 30);
        let uuid = uuid_of(&a).unwrap();
        assert_eq!(format!("{APPROVAL}_{}", encode(uuid)), a);
        assert!(uuid_of("apr_short").is_none());
    }
}
