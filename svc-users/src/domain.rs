//! User input parsed once at the boundary into types that can only hold valid values.

use todo_common::problem::FieldError;
use todo_common::time::Timestamp;

todo_common::object_id_type!(
    /// A user's id, the subject of the tokens issued to them.
    UserId
);

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: Option<DisplayName>,
    /// bcrypt's, never the password.
    pub password_hash: String,
    pub created_at: Timestamp,
}

impl User {
    /// A new user, registered at `now`.
    pub fn register(email: Email, name: Option<DisplayName>, password_hash: String, now: Timestamp) -> Self {
        Self { id: UserId::new(), email, name, password_hash, created_at: now }
    }
}

/// A syntactically valid e-mail address, stored lower-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let email = raw.trim().to_lowercase();
        let invalid = |why: &str| FieldError::new("email", why);
        if email.len() > 254 {
            return Err(invalid("must be at most 254 characters"));
        }
        let (local, domain) = email.split_once('@').ok_or_else(|| invalid("must be an e-mail address"))?;
        let labels_ok = domain.split('.').count() >= 2
            && domain.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-'));
        let chars_ok = email.chars().all(|c| c.is_alphanumeric() || "@.!#$%&'*+/=?^_`{|}~-".contains(c));
        if local.is_empty() || local.len() > 64 || domain.contains('@') || !labels_ok || !chars_ok {
            return Err(invalid("must be an e-mail address"));
        }
        Ok(Self(email))
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A password of 8 to 128 characters (schema-checked too; kept here so no code path
/// can hash an unchecked one).
#[derive(Clone)]
pub struct Password(String);

impl Password {
    pub fn parse(raw: String) -> Result<Self, FieldError> {
        match raw.chars().count() {
            8..=128 => Ok(Self(raw)),
            _ => Err(FieldError::new("password", "must be 8 to 128 characters")),
        }
    }
}

impl AsRef<str> for Password {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A display name of 1 to 100 characters, not blank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, FieldError> {
        let name = raw.trim();
        match name.chars().count() {
            1..=100 => Ok(Self(name.to_owned())),
            _ => Err(FieldError::new("name", "must be 1 to 100 characters, not blank")),
        }
    }
}

impl AsRef<str> for DisplayName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(Email::parse(" Alice@Example.COM ").unwrap().as_ref(), "alice@example.com");
        for bad in ["", "alice", "@example.com", "alice@", "alice@example", "a b@example.com", "a@b@c.com", "a@-x.com"]
        {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }

    #[test]
    fn passwords_and_names_have_bounds() {
        assert!(Password::parse("1234567".into()).is_err());
        assert!(Password::parse("12345678".into()).is_ok());
        assert!(Password::parse("é".repeat(128)).is_ok());
        assert!(Password::parse("x".repeat(129)).is_err());
        assert!(DisplayName::parse("   ").is_err());
        assert_eq!(DisplayName::parse(" Bob ").unwrap().as_ref(), "Bob");
    }
}
