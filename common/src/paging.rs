//! Cursor paging over a newest-first listing, the same for every service: a page is read
//! with one item more than it holds; that extra one only tells that another page follows,
//! which starts after the last item kept. Its cursor is one format everywhere.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::time::Timestamp;

/// An item's place in a newest-first listing: its time, ties broken by its id (both
/// descending). Opaque to clients: base64url of `<unix millis>.<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor<Id> {
    pub at: Timestamp,
    pub id: Id,
}

impl<Id: fmt::Display + FromStr> Cursor<Id> {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}.{}", self.at.millis(), self.id))
    }

    /// `None` for anything [`Cursor::encode`] did not make.
    pub fn decode(raw: &str) -> Option<Self> {
        let text = String::from_utf8(URL_SAFE_NO_PAD.decode(raw).ok()?).ok()?;
        let (millis, id) = text.split_once('.')?;
        Some(Self { at: Timestamp::checked_from_millis(millis.parse().ok()?)?, id: id.parse().ok()? })
    }
}

/// What a listing lists: items that know their place in it.
pub trait Listed {
    type Id;
    fn cursor(&self) -> Cursor<Self::Id>;
}

/// One page, newest first, and where the next one starts (none after the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T: Listed> {
    pub items: Vec<T>,
    pub next: Option<Cursor<T::Id>>,
}

impl<T: Listed> Page<T> {
    /// From `items` read newest first with a limit of `limit + 1`.
    pub fn from_overfetch(mut items: Vec<T>, limit: usize) -> Self {
        if items.len() <= limit {
            return Self { items, next: None };
        }
        items.truncate(limit);
        let next = items.last().map(T::cursor);
        Self { items, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Item(u32);

    impl Listed for Item {
        type Id = u32;
        fn cursor(&self) -> Cursor<u32> {
            Cursor { at: Timestamp::from_millis(1_000), id: self.0 }
        }
    }

    #[test]
    fn the_extra_item_means_a_next_page_after_the_last_kept() {
        let page = Page::from_overfetch(vec![Item(5), Item(4), Item(3)], 2);
        assert_eq!((page.items, page.next.map(|c| c.id)), (vec![Item(5), Item(4)], Some(4)));
        assert_eq!(Page::from_overfetch(vec![Item(5), Item(4)], 2).next, None);
        assert_eq!(Page::<Item>::from_overfetch(vec![], 2).items, vec![]);
    }

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let cursor = Cursor { at: Timestamp::from_millis(1_700_000_000_123), id: 42u32 };
        assert_eq!(Cursor::decode(&cursor.encode()), Some(cursor));
        assert_eq!(Cursor::<u32>::decode("garbage!"), None);
        assert_eq!(Cursor::<u32>::decode(&URL_SAFE_NO_PAD.encode("12.nothex")), None);
        assert_eq!(Cursor::<u32>::decode(&URL_SAFE_NO_PAD.encode("12")), None);
        assert_eq!(Cursor::<u32>::decode(&URL_SAFE_NO_PAD.encode(format!("{}.1", i64::MAX))), None, "out of range");
    }
}
