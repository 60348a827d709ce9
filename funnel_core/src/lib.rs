//! The funnel's per-request core, compiled: a pool of a few hundred candidates in, a page of k
//! catalog rows out (blend, filters, one ordering, fill, diversity cap, exploration).
//!
//! numpy's fixed cost per call (tens of microseconds for `unique` or `lexsort` on a pool this
//! small) outweighed the work itself, so the whole page is one native call. The numpy stages in
//! `serving/` stay as the reference this core is held equal to (tests/test_funnel_core.py), and
//! every rule below restates one of theirs exactly, ties included.

use std::cmp::Ordering;

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

/// Region rule codes (`region` argument of `page`): any region, or a region no item lists.
const ANY_REGION: i64 = -2;
const UNLISTED_REGION: i64 = -1;

/// The snapshot catalog's columns (`serving.catalog_arrays.CatalogArrays`), copied once per catalog read.
#[pyclass(frozen)]
struct Catalog {
    ids: Vec<Py<PyAny>>, // the item ids, for the seen/disliked/excluded sets' membership
    active: Vec<bool>,
    anywhere: Vec<bool>,
    in_region: Vec<bool>,
    regions: usize,
    age_rank: Vec<i64>,
    in_category: Vec<bool>,
    categories: usize,
    first_category: Vec<usize>,
    tie_rank: Vec<i64>,
}

#[pymethods]
impl Catalog {
    #[new]
    #[allow(clippy::too_many_arguments)]
    fn new(
        ids: Vec<Py<PyAny>>,
        active: PyReadonlyArray1<bool>,
        anywhere: PyReadonlyArray1<bool>,
        in_region: PyReadonlyArray2<bool>,
        age_rank: PyReadonlyArray1<i64>,
        in_category: PyReadonlyArray2<bool>,
        first_category: PyReadonlyArray1<i64>,
        tie_rank: PyReadonlyArray1<i64>,
    ) -> Self {
        let region_matrix = in_region.as_array();
        let category_matrix = in_category.as_array();
        Catalog {
            ids,
            active: active.as_array().to_vec(),
            anywhere: anywhere.as_array().to_vec(),
            regions: region_matrix.ncols(),
            in_region: region_matrix.iter().copied().collect(),
            age_rank: age_rank.as_array().to_vec(),
            categories: category_matrix.ncols(),
            in_category: category_matrix.iter().copied().collect(),
            first_category: first_category.as_array().iter().map(|&c| c as usize).collect(),
            tie_rank: tie_rank.as_array().to_vec(),
        }
    }

    fn __len__(&self) -> usize {
        self.active.len()
    }
}

impl Catalog {
    fn in_any(&self, row: usize, columns: &[usize]) -> bool {
        columns.iter().any(|&column| self.in_category[row * self.categories + column])
    }
}

/// One ranked item: its catalog row, score, the source naming it and the pool position of the
/// candidate that brought it (-1 for none).
#[derive(Clone, Copy)]
struct Ranked {
    row: usize,
    score: f64,
    source: i64,
    because: i64,
}

/// What a page may show (`serving.filters.ItemFilter`).
struct Rules<'a, 'py> {
    catalog: &'a Catalog,
    region: i64,
    include: Option<Vec<usize>>,
    exclude: Vec<usize>,
    max_age: Option<i64>,
    blocked: Vec<Bound<'py, PyAny>>,
}

impl Rules<'_, '_> {
    fn allows(&self, row: usize) -> PyResult<bool> {
        let catalog = self.catalog;
        if !catalog.active[row] {
            return Ok(false);
        }
        if self.region != ANY_REGION {
            let listed = self.region != UNLISTED_REGION && catalog.in_region[row * catalog.regions + self.region as usize];
            if !(catalog.anywhere[row] || listed) {
                return Ok(false);
            }
        }
        if let Some(include) = &self.include {
            if !catalog.in_any(row, include) {
                return Ok(false);
            }
        }
        if catalog.in_any(row, &self.exclude) {
            return Ok(false);
        }
        if matches!(self.max_age, Some(limit) if catalog.age_rank[row] > limit) {
            return Ok(false);
        }
        let py = match self.blocked.first() {
            None => return Ok(true),
            Some(found) => found.py(),
        };
        let id = catalog.ids[row].bind(py);
        for found in &self.blocked {
            if found.contains(id)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// The pool's distinct catalog rows with their summed credits (in pool order, as `bincount` sums)
/// and the candidate with the largest credit, the earliest among equals (`serving.ranking.blended`).
fn blended(rows: &[i64], sources: &[i64], ranks: &[i64], weights: &[f64], rank_offset: f64) -> Vec<Ranked> {
    let mut at: FxHashMap<i64, usize> = FxHashMap::default();
    let mut items: Vec<Ranked> = Vec::with_capacity(rows.len());
    let mut best_credit: Vec<f64> = Vec::with_capacity(rows.len());
    for (position, (&row, (&source, &rank))) in rows.iter().zip(sources.iter().zip(ranks)).enumerate() {
        if row < 0 {
            continue;
        }
        let credit = weights[source as usize] / (rank_offset + rank as f64);
        match at.get(&row) {
            Some(&n) => {
                items[n].score += credit;
                if credit > best_credit[n] {
                    best_credit[n] = credit;
                    items[n].because = position as i64;
                }
            }
            None => {
                at.insert(row, items.len());
                items.push(Ranked { row: row as usize, score: 0.0 + credit, source: 0, because: position as i64 });
                best_credit.push(credit);
            }
        }
    }
    for item in &mut items {
        item.source = sources[item.because as usize];
    }
    items
}

/// Score descending (as a sort of the negated score: NaN last, -0 equal to 0), then the item id's order.
fn page_order(catalog: &Catalog) -> impl Fn(&Ranked, &Ranked) -> Ordering + '_ {
    move |a, b| {
        let (x, y) = (-a.score, -b.score);
        x.partial_cmp(&y)
            .unwrap_or_else(|| x.is_nan().cmp(&y.is_nan()))
            .then(catalog.tie_rank[a.row].cmp(&catalog.tie_rank[b.row]))
    }
}

/// Up to `needed` rows not in `taken` that `rules` allow: the popular list's first, then the
/// catalog's in its order (`serving.fill.popular_fill`).
fn filled(rules: &Rules, popular: &[i64], taken: &[Ranked], needed: usize, source: i64) -> PyResult<Vec<Ranked>> {
    let mut excluded: FxHashSet<usize> = taken.iter().map(|item| item.row).collect();
    let mut found = Vec::with_capacity(needed);
    let known_popular = popular.iter().filter(|&&row| row >= 0).map(|&row| row as usize);
    for row in known_popular.chain(0..rules.catalog.active.len()) {
        if found.len() == needed {
            break;
        }
        if !excluded.contains(&row) && rules.allows(row)? {
            excluded.insert(row);
            found.push(Ranked { row, score: 0.0, source, because: -1 });
        }
    }
    Ok(found)
}

/// Per element: how many before it share its value (`serving.diversity.earlier_of_same`).
fn earlier_of_same(values: impl Iterator<Item = usize>) -> Vec<i64> {
    let mut seen: FxHashMap<usize, i64> = FxHashMap::default();
    values
        .map(|value| {
            let count = seen.entry(value).or_insert(0);
            *count += 1;
            *count - 1
        })
        .collect()
}

/// The first `k` under the per-category cap, topped up in rank order with what it held back
/// (`serving.diversity.capped`).
fn capped(catalog: &Catalog, sequence: &[Ranked], cap: i64, k: usize) -> Vec<Ranked> {
    if cap <= 0 {
        return sequence.iter().take(k).copied().collect();
    }
    let earlier = earlier_of_same(sequence.iter().map(|item| catalog.first_category[item.row]));
    let within = |n: &usize| earlier[*n] < cap;
    let mut page: Vec<Ranked> = (0..sequence.len()).filter(within).take(k).map(|n| sequence[n]).collect();
    let short = k - page.len();
    page.extend((0..sequence.len()).filter(|n| !within(n)).take(short).map(|n| sequence[n]));
    page
}

/// `page` with `round(k * share)` new items where it can (`serving.exploration.explored`); the
/// caller leaves exploration out when no catalog item is new.
fn explored(catalog: &Catalog, page: Vec<Ranked>, sequence: &[Ranked], fresh: &[bool], max_per_category: i64,
            share: f64, k: usize, source: i64) -> Vec<Ranked> {
    let fresh_on_page = page.iter().filter(|item| fresh[item.row]).count() as i64;
    let wanted = ((k as f64) * share).round_ties_even() as i64 - fresh_on_page;
    if wanted <= 0 {
        return page;
    }
    let on_page: FxHashSet<usize> = page.iter().map(|item| item.row).collect();
    let mut offered: Vec<Ranked> =
        sequence.iter().filter(|item| fresh[item.row] && !on_page.contains(&item.row)).copied().collect();
    if max_per_category != 0 {
        let mut per_category = vec![0i64; catalog.categories.max(1)];
        for item in &page {
            per_category[catalog.first_category[item.row]] += 1;
        }
        let earlier = earlier_of_same(offered.iter().map(|item| catalog.first_category[item.row]));
        offered = offered
            .into_iter()
            .zip(earlier)
            .filter(|(item, earlier)| per_category[catalog.first_category[item.row]] + earlier < max_per_category)
            .map(|(item, _)| item)
            .collect();
    }
    let replaceable: Vec<usize> = (0..page.len()).filter(|&n| !fresh[page[n].row]).collect();
    let extra = (wanted as usize).min(offered.len()).min(replaceable.len());
    let leaving: FxHashSet<usize> = replaceable[replaceable.len() - extra..].iter().copied().collect();
    let mut explored: Vec<Ranked> =
        page.into_iter().enumerate().filter(|(n, _)| !leaving.contains(n)).map(|(_, item)| item).collect();
    explored.extend(offered[..extra].iter().map(|item| Ranked { source, because: -1, ..*item }));
    explored
}

type PageColumns<'py> =
    (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>, bool);

/// A request's page from its candidates.
///
/// Scores: the blend of the pool (`rows`, `sources`, `ranks`, with `weights` per source code and
/// `rank_offset`), or, given `scored`, a learned ranker's (distinct rows, scores, naming position).
/// Items in any `boost_columns` category score `boost` times more. `region`: a region column,
/// `UNLISTED_REGION` or `ANY_REGION`; `include` None for no include filter. `explore_share` None
/// leaves exploration out (no catalog item is new, or the page does not explore), `cap` 0 the
/// diversity rule. Returns the page's rows, scores, sources and naming positions, and whether the
/// filters left it short (then filled).
#[pyfunction]
#[pyo3(signature = (catalog, rows, sources, ranks, weights, rank_offset, scored, boost_columns, boost, region, include,
                    exclude, max_age, blocked, popular, fresh, k, cap, max_per_category, explore_share, fill_source,
                    explore_source))]
#[allow(clippy::too_many_arguments)]
fn page<'py>(
    py: Python<'py>,
    catalog: &Catalog,
    rows: PyReadonlyArray1<i64>,
    sources: PyReadonlyArray1<i64>,
    ranks: PyReadonlyArray1<i64>,
    weights: Vec<f64>,
    rank_offset: f64,
    scored: Option<(PyReadonlyArray1<i64>, PyReadonlyArray1<f64>, PyReadonlyArray1<i64>)>,
    boost_columns: Vec<usize>,
    boost: f64,
    region: i64,
    include: Option<Vec<usize>>,
    exclude: Vec<usize>,
    max_age: Option<i64>,
    blocked: Vec<Bound<'py, PyAny>>,
    popular: PyReadonlyArray1<i64>,
    fresh: PyReadonlyArray1<bool>,
    k: usize,
    cap: i64,
    max_per_category: i64,
    explore_share: Option<f64>,
    fill_source: i64,
    explore_source: i64,
) -> PyResult<PageColumns<'py>> {
    let sources = sources.as_slice()?;
    let mut ranked = match &scored {
        None => blended(rows.as_slice()?, sources, ranks.as_slice()?, &weights, rank_offset),
        Some((rows, scores, best)) => {
            let best = best.as_slice()?;
            rows.as_slice()?
                .iter()
                .zip(scores.as_slice()?)
                .zip(best)
                .map(|((&row, &score), &at)| Ranked { row: row as usize, score, source: sources[at as usize], because: at })
                .collect()
        }
    };
    if !boost_columns.is_empty() {
        for item in ranked.iter_mut().filter(|item| catalog.in_any(item.row, &boost_columns)) {
            item.score *= boost;
        }
    }
    ranked.sort_unstable_by(page_order(catalog));
    let rules = Rules { catalog, region, include, exclude, max_age, blocked };
    let mut sequence = Vec::with_capacity(ranked.len());
    for item in ranked {
        if rules.allows(item.row)? {
            sequence.push(item);
        }
    }
    let widened = sequence.len() < k;
    if widened {
        let fill = filled(&rules, popular.as_slice()?, &sequence, k - sequence.len(), fill_source)?;
        sequence.extend(fill);
    }
    let mut chosen = capped(catalog, &sequence, cap, k);
    if let Some(share) = explore_share {
        chosen = explored(catalog, chosen, &sequence, fresh.as_slice()?, max_per_category, share, k, explore_source);
    }
    let column = |value: fn(&Ranked) -> i64| chosen.iter().map(value).collect::<Vec<i64>>().into_pyarray(py);
    Ok((
        column(|item| item.row as i64),
        chosen.iter().map(|item| item.score).collect::<Vec<f64>>().into_pyarray(py),
        column(|item| item.source),
        column(|item| item.because),
        widened,
    ))
}

#[pymodule]
fn funnel_core(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<Catalog>()?;
    module.add_function(wrap_pyfunction!(page, module)?)?;
    module.add("ANY_REGION", ANY_REGION)?;
    module.add("UNLISTED_REGION", UNLISTED_REGION)?;
    Ok(())
}
