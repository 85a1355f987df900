//! Cursor paging over a newest-first listing, the same for every service: read one item
//! more than the page holds; that extra one only tells that another page follows, which
//! starts after the last item kept.

/// Trims `items` (read with a limit of `limit + 1`) to the page, and the cursor of the
/// next page when there is one.
pub fn trim_overfetch<T, C>(mut items: Vec<T>, limit: usize, cursor_after: impl Fn(&T) -> C) -> (Vec<T>, Option<C>) {
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next = items.last().map(cursor_after);
    (items, next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_extra_item_means_a_next_page_after_the_last_kept() {
        assert_eq!(trim_overfetch(vec![5, 4, 3], 2, |n| *n), (vec![5, 4], Some(4)));
        assert_eq!(trim_overfetch(vec![5, 4], 2, |n| *n), (vec![5, 4], None));
        assert_eq!(trim_overfetch(Vec::<i32>::new(), 2, |n| *n), (vec![], None));
    }
}
