//! Maximum-weight matching on a general graph: Edmonds' blossom algorithm
//! in its O(n³) primal-dual form (Galil, "Efficient algorithms for finding
//! maximum matching in graphs", ACM Computing Surveys 18(1), 1986; the
//! bookkeeping follows Gabow's thesis and van Rantwijk's well-known
//! formulation), on exact `i64` weights.
//!
//! # Why the answer is optimal
//!
//! The algorithm keeps a primal matching `M` and a dual solution of the
//! matching LP with odd-set constraints: a variable `u(v)` per vertex and
//! `z(B) ≥ 0` per blossom (an odd set of vertices). Every step preserves
//!
//! 1. dual feasibility: `u(i) + u(j) + Σ_{B ∋ i,j} z(B) ≥ w(i, j)` for every
//!    edge, `u ≥ 0`, `z ≥ 0`;
//! 2. matched edges are tight (equality above);
//! 3. a blossom with `z(B) > 0` has exactly `(|B| − 1) / 2` matched edges
//!    inside it;
//! 4. all single (unmatched) vertices carry the same `u`, the minimum of all
//!    vertex duals.
//!
//! A stage grows alternating trees from the single vertices on tight edges
//! only (S and T labels), shrinks odd cycles into blossoms, and when no tight
//! edge helps, moves the duals by the largest `δ` that keeps 1–4 (`δ₁`: the
//! single vertices' dual reaches 0; `δ₂`: an S–free edge gets tight; `δ₃`:
//! an S–S edge gets tight; `δ₄`: a T-blossom's `z` reaches 0 and it is
//! expanded). Each stage ends with one augmentation (one more matched edge)
//! or with `δ₁`, after which every single vertex has `u = 0`. Then complementary
//! slackness holds in full (1–3 and `u(v) = 0` for every single `v`), so the
//! primal weight equals the dual objective `Σ u + Σ z(B)·⌊|B|/2⌋`, which by
//! weak duality bounds every matching: `M` is a maximum-weight matching.
//! There are at most n/2 augmentations and O(n) dual steps per stage.
//!
//! All duals are kept doubled (`dual[v] = 2·u(v)`, `dual[B] = z(B)`), so
//! with integer weights every quantity stays an integer and the result is
//! exact and deterministic (the same input gives the same matching on every
//! machine). The final duals are returned: the caller checks them against
//! edges this run never saw (see [`Solution::covers`]).
//!
//! On a bipartite graph there is no odd cycle, no blossom ever forms, and the
//! method is the Hungarian (Kuhn–Munkres) primal-dual algorithm: the same
//! code is the assignment algorithm of `across-sides`.

/// "No vertex / edge / endpoint".
const NONE: usize = usize::MAX;

/// A graph edge: two distinct vertices and a positive weight.
pub type Edge = (u32, u32, i64);

/// The result of [`max_weight_matching`].
#[derive(Debug, Clone)]
pub struct Solution {
    /// Per vertex: its partner, if matched.
    pub mate: Vec<Option<u32>>,
    /// Per vertex: `2·u(v)`.
    vertex_dual: Vec<i64>,
    /// Per vertex: the blossoms containing it, innermost first, as
    /// `(blossom id, z(B))` for `z(B) > 0`.
    blossoms: Vec<Vec<(usize, i64)>>,
    /// The dual objective `Σ u + Σ z(B)·⌊|B|/2⌋`, doubled.
    dual_objective2: i128,
}

impl Solution {
    /// Twice the slack of a pair under the final duals, `2(u(i) + u(j) +
    /// Σ_{B ∋ i,j} z(B) − w)`: negative means the duals do not cover that
    /// pair, so an edge `(i, j, w)` could improve the matching.
    pub fn slack2(&self, i: usize, j: usize, w: i64) -> i128 {
        let mut s = i128::from(self.vertex_dual[i]) + i128::from(self.vertex_dual[j]) - 2 * i128::from(w);
        // Blossoms are laminar, so those holding both ends are the outermost
        // ones of each list: a common suffix, walked from the top.
        let (bi, bj) = (&self.blossoms[i], &self.blossoms[j]);
        for (&(b, z), &(c, _)) in bi.iter().rev().zip(bj.iter().rev()) {
            if b != c {
                break;
            }
            s += 2 * i128::from(z);
        }
        s
    }

    /// Per vertex: `2·u(v)`, the vertex part of the duals (a pair with
    /// `2u(i) + 2u(j) ≥ 2w` is covered whatever blossoms hold it).
    pub fn vertex_duals2(&self) -> &[i64] {
        &self.vertex_dual
    }

    /// Whether the final duals cover the pair `(i, j)` at weight `w`.
    pub fn covers(&self, i: usize, j: usize, w: i64) -> bool {
        self.slack2(i, j, w) >= 0
    }

    /// A vertex-only cover, doubled: `Y(v) = 2u(v) + Σ_{B ∋ v} z(B)`, with
    /// `Y(i) + Y(j) ≥ 2w(i, j)` wherever [`Solution::covers`] holds.
    pub fn vertex_cover2(&self) -> Vec<i64> {
        self.vertex_dual
            .iter()
            .zip(&self.blossoms)
            .map(|(d, bs)| bs.iter().fold(*d, |acc, (_, z)| acc.saturating_add(*z)))
            .collect()
    }

    /// Twice the dual objective: an upper bound on twice the weight of any
    /// matching of the edges the duals cover (equal to twice the weight of
    /// the matching found).
    pub fn dual_objective2(&self) -> i128 {
        self.dual_objective2
    }
}

/// The working state of one run (names follow Galil's paper: S and T
/// labels, bases, sub-blossoms).
struct State<'a> {
    n: usize,
    edges: &'a [Edge],
    /// Per edge endpoint `p` (edge `p / 2`): the vertex at that end.
    endpoint: Vec<usize>,
    /// Per vertex, as CSR: the remote endpoints of its edges.
    adj_start: Vec<usize>,
    adj: Vec<usize>,
    /// Per vertex: the remote endpoint of its matched edge, or NONE.
    mate: Vec<usize>,
    /// Per top-level blossom: 0 free, 1 S, 2 T (bit 4: breadcrumb).
    label: Vec<u8>,
    /// Per labelled blossom: remote endpoint of the edge that labelled it.
    labelend: Vec<usize>,
    /// Per vertex: its top-level blossom.
    inblossom: Vec<usize>,
    parent: Vec<usize>,
    childs: Vec<Vec<usize>>,
    base: Vec<usize>,
    /// Per non-trivial blossom: `endps[b][i]` is the local endpoint of the
    /// edge from `childs[b][i]` to `childs[b][i + 1]`.
    endps: Vec<Vec<usize>>,
    /// Least-slack edge to an S-vertex (free vertex) or to another
    /// S-blossom (S-blossom), or NONE.
    bestedge: Vec<usize>,
    blossombestedges: Vec<Option<Vec<usize>>>,
    unused: Vec<usize>,
    dual: Vec<i64>,
    allowedge: Vec<bool>,
    queue: Vec<usize>,
}

/// Computes a maximum-weight matching of the graph on `n` vertices.
///
/// Each edge joins two distinct vertices below `n` and appears once; the
/// weights must be positive and at most `i64::MAX / 4` (so that doubled
/// duals cannot overflow). Panics on neither: an edge that breaks the rules
/// is skipped.
pub fn max_weight_matching(n: usize, edges: &[Edge]) -> Solution {
    let edges: Vec<Edge> = edges
        .iter()
        .copied()
        .filter(|&(i, j, w)| i != j && (i as usize) < n && (j as usize) < n && w > 0 && w <= i64::MAX / 4)
        .collect();
    let mut st = State::new(n, &edges);
    st.solve();
    st.solution()
}

impl<'a> State<'a> {
    fn new(n: usize, edges: &'a [Edge]) -> Self {
        let m = edges.len();
        let mut endpoint = Vec::with_capacity(2 * m);
        let mut degree = vec![0usize; n + 1];
        for &(i, j, _) in edges {
            endpoint.push(i as usize);
            endpoint.push(j as usize);
            degree[i as usize] += 1;
            degree[j as usize] += 1;
        }
        let mut adj_start = vec![0usize; n + 1];
        for v in 0..n {
            adj_start[v + 1] = adj_start[v] + degree[v];
        }
        let mut fill = adj_start.clone();
        let mut adj = vec![0usize; 2 * m];
        for (k, &(i, j, _)) in edges.iter().enumerate() {
            adj[fill[i as usize]] = 2 * k + 1;
            fill[i as usize] += 1;
            adj[fill[j as usize]] = 2 * k;
            fill[j as usize] += 1;
        }
        let maxweight = edges.iter().map(|e| e.2).max().unwrap_or(0).max(0);
        let mut base: Vec<usize> = (0..n).collect();
        base.resize(2 * n, NONE);
        let mut dual = vec![maxweight; n];
        dual.resize(2 * n, 0);
        Self {
            n,
            edges,
            endpoint,
            adj_start,
            adj,
            mate: vec![NONE; n],
            label: vec![0; 2 * n],
            labelend: vec![NONE; 2 * n],
            inblossom: (0..n).collect(),
            parent: vec![NONE; 2 * n],
            childs: vec![Vec::new(); 2 * n],
            base,
            endps: vec![Vec::new(); 2 * n],
            bestedge: vec![NONE; 2 * n],
            blossombestedges: vec![None; 2 * n],
            unused: (n..2 * n).rev().collect(),
            dual,
            allowedge: vec![false; m],
            queue: Vec::new(),
        }
    }

    /// Twice the slack of edge `k` (between different top-level blossoms).
    fn slack(&self, k: usize) -> i64 {
        let (i, j, w) = self.edges[k];
        self.dual[i as usize] + self.dual[j as usize] - 2 * w
    }

    /// The vertices of blossom `b`.
    fn leaves(&self, b: usize, out: &mut Vec<usize>) {
        if b < self.n {
            out.push(b);
            return;
        }
        let mut stack = vec![b];
        while let Some(x) = stack.pop() {
            if x < self.n {
                out.push(x);
            } else {
                stack.extend(self.childs[x].iter().rev());
            }
        }
    }

    fn leaves_of(&self, b: usize) -> Vec<usize> {
        let mut out = Vec::new();
        self.leaves(b, &mut out);
        out
    }

    /// Labels the top-level blossom of `w` with `t` (1 = S, 2 = T), reached
    /// through the edge whose remote endpoint is `p`.
    fn assign_label(&mut self, w: usize, t: u8, p: usize) {
        let b = self.inblossom[w];
        self.label[w] = t;
        self.label[b] = t;
        self.labelend[w] = p;
        self.labelend[b] = p;
        self.bestedge[w] = NONE;
        self.bestedge[b] = NONE;
        if t == 1 {
            let mut leaves = std::mem::take(&mut self.queue);
            self.leaves(b, &mut leaves);
            self.queue = leaves;
        } else {
            // A T-blossom's base is matched (else it would be S); its mate
            // becomes S.
            let base = self.base[b];
            let m = self.mate[base];
            self.assign_label(self.endpoint[m], 1, m ^ 1);
        }
    }

    /// Traces back from S-vertices `v` and `w`: the base of the blossom
    /// their edge closes, or NONE when it joins two trees (an augmenting
    /// path).
    fn scan_blossom(&mut self, mut v: usize, mut w: usize) -> usize {
        let mut path = Vec::new();
        let mut base = NONE;
        while v != NONE || w != NONE {
            let b = self.inblossom[v];
            if self.label[b] & 4 != 0 {
                base = self.base[b];
                break;
            }
            path.push(b);
            self.label[b] = 5;
            if self.labelend[b] == NONE {
                v = NONE;
            } else {
                let t = self.inblossom[self.endpoint[self.labelend[b]]];
                v = self.endpoint[self.labelend[t]];
            }
            if w != NONE {
                std::mem::swap(&mut v, &mut w);
            }
        }
        for b in path {
            self.label[b] = 1;
        }
        base
    }

    /// Shrinks the odd cycle through edge `k` with base `base` into a new
    /// S-blossom with `z = 0`.
    fn add_blossom(&mut self, base: usize, k: usize) {
        let (v, w, _) = self.edges[k];
        let bb = self.inblossom[base];
        let mut bv = self.inblossom[v as usize];
        let mut bw = self.inblossom[w as usize];
        let Some(b) = self.unused.pop() else { return };
        self.base[b] = base;
        self.parent[b] = NONE;
        self.parent[bb] = b;
        let mut path = Vec::new();
        let mut endps = Vec::new();
        while bv != bb {
            self.parent[bv] = b;
            path.push(bv);
            endps.push(self.labelend[bv]);
            bv = self.inblossom[self.endpoint[self.labelend[bv]]];
        }
        path.push(bb);
        path.reverse();
        endps.reverse();
        endps.push(2 * k);
        while bw != bb {
            self.parent[bw] = b;
            path.push(bw);
            endps.push(self.labelend[bw] ^ 1);
            bw = self.inblossom[self.endpoint[self.labelend[bw]]];
        }
        self.label[b] = 1;
        self.labelend[b] = self.labelend[bb];
        self.dual[b] = 0;
        self.childs[b] = path.clone();
        self.endps[b] = endps;
        for x in self.leaves_of(b) {
            if self.label[self.inblossom[x]] == 2 {
                self.queue.push(x);
            }
            self.inblossom[x] = b;
        }
        // The least-slack edges from the new blossom to each other S-blossom.
        let mut bestedgeto = vec![NONE; 2 * self.n];
        for &sub in &path {
            let lists: Vec<usize> = match self.blossombestedges[sub].take() {
                Some(list) => list,
                None => self
                    .leaves_of(sub)
                    .into_iter()
                    .flat_map(|x| self.adj[self.adj_start[x]..self.adj_start[x + 1]].iter().map(|p| p / 2))
                    .collect(),
            };
            for kk in lists {
                let (mut i, mut j, _) = self.edges[kk];
                if self.inblossom[j as usize] == b {
                    std::mem::swap(&mut i, &mut j);
                }
                let bj = self.inblossom[j as usize];
                if bj != b
                    && self.label[bj] == 1
                    && (bestedgeto[bj] == NONE || self.slack(kk) < self.slack(bestedgeto[bj]))
                {
                    bestedgeto[bj] = kk;
                }
            }
            self.bestedge[sub] = NONE;
        }
        let list: Vec<usize> = bestedgeto.into_iter().filter(|&kk| kk != NONE).collect();
        let mut best = NONE;
        for &kk in &list {
            if best == NONE || self.slack(kk) < self.slack(best) {
                best = kk;
            }
        }
        self.bestedge[b] = best;
        self.blossombestedges[b] = Some(list);
    }

    /// Expands top-level blossom `b` into its sub-blossoms (at the end of a
    /// stage when `z(b) = 0`, or mid-stage as a T-blossom reaching `z = 0`).
    fn expand_blossom(&mut self, b: usize, end_stage: bool) {
        let childs = self.childs[b].clone();
        for &s in &childs {
            self.parent[s] = NONE;
            if s < self.n {
                self.inblossom[s] = s;
            } else if end_stage && self.dual[s] == 0 {
                self.expand_blossom(s, end_stage);
            } else {
                for x in self.leaves_of(s) {
                    self.inblossom[x] = s;
                }
            }
        }
        if !end_stage && self.label[b] == 2 {
            // Relabel the sub-blossoms on the even path from the entry child
            // to the base: T, S, T, ..., T at the base.
            let entry = self.inblossom[self.endpoint[self.labelend[b] ^ 1]];
            let len = childs.len() as isize;
            let at = |j: isize| -> usize { j.rem_euclid(len) as usize };
            let mut j = childs.iter().position(|&c| c == entry).unwrap_or(0) as isize;
            let (step, trick): (isize, usize) = if j & 1 == 1 {
                j -= len;
                (1, 0)
            } else {
                (-1, 1)
            };
            let endps = self.endps[b].clone();
            let mut p = self.labelend[b];
            while j != 0 {
                let q = endps[at(j - trick as isize)] ^ trick;
                self.label[self.endpoint[p ^ 1]] = 0;
                self.label[self.endpoint[q ^ 1]] = 0;
                self.assign_label(self.endpoint[p ^ 1], 2, p);
                self.allowedge[q / 2] = true;
                j += step;
                p = endps[at(j - trick as isize)] ^ trick;
                self.allowedge[p / 2] = true;
                j += step;
            }
            // The base sub-blossom becomes T without labelling its mate.
            let bv = childs[at(j)];
            let x = self.endpoint[p ^ 1];
            self.label[x] = 2;
            self.label[bv] = 2;
            self.labelend[x] = p;
            self.labelend[bv] = p;
            self.bestedge[bv] = NONE;
            j += step;
            while childs[at(j)] != entry {
                let bv = childs[at(j)];
                if self.label[bv] == 1 {
                    j += step;
                    continue;
                }
                // A sub-blossom off the path stays free unless one of its
                // vertices was reached from outside.
                if let Some(v) = self.leaves_of(bv).into_iter().find(|&v| self.label[v] != 0) {
                    self.label[v] = 0;
                    let m = self.mate[self.base[bv]];
                    self.label[self.endpoint[m]] = 0;
                    self.assign_label(v, 2, self.labelend[v]);
                }
                j += step;
            }
        }
        self.label[b] = 0;
        self.labelend[b] = NONE;
        self.childs[b] = Vec::new();
        self.endps[b] = Vec::new();
        self.base[b] = NONE;
        self.blossombestedges[b] = None;
        self.bestedge[b] = NONE;
        self.unused.push(b);
    }

    /// Swaps matched and unmatched edges on the alternating path inside
    /// blossom `b` from vertex `v` to the base; `v` becomes the base.
    fn augment_blossom(&mut self, b: usize, v: usize) {
        let mut t = v;
        while self.parent[t] != b {
            t = self.parent[t];
        }
        if t >= self.n {
            self.augment_blossom(t, v);
        }
        let len = self.childs[b].len() as isize;
        let i = self.childs[b].iter().position(|&c| c == t).unwrap_or(0);
        let mut j = i as isize;
        let (step, trick): (isize, usize) = if j & 1 == 1 {
            j -= len;
            (1, 0)
        } else {
            (-1, 1)
        };
        let at = |j: isize| -> usize { j.rem_euclid(len) as usize };
        while j != 0 {
            j += step;
            let t = self.childs[b][at(j)];
            let p = self.endps[b][at(j - trick as isize)] ^ trick;
            if t >= self.n {
                self.augment_blossom(t, self.endpoint[p]);
            }
            j += step;
            let t = self.childs[b][at(j)];
            if t >= self.n {
                self.augment_blossom(t, self.endpoint[p ^ 1]);
            }
            self.mate[self.endpoint[p]] = p ^ 1;
            self.mate[self.endpoint[p ^ 1]] = p;
        }
        self.childs[b].rotate_left(i);
        self.endps[b].rotate_left(i);
        self.base[b] = self.base[self.childs[b][0]];
    }

    /// Augments along the path through S–S edge `k` joining two trees.
    fn augment_matching(&mut self, k: usize) {
        let (v, w, _) = self.edges[k];
        for (mut s, mut p) in [(v as usize, 2 * k + 1), (w as usize, 2 * k)] {
            loop {
                let bs = self.inblossom[s];
                if bs >= self.n {
                    self.augment_blossom(bs, s);
                }
                self.mate[s] = p;
                if self.labelend[bs] == NONE {
                    break;
                }
                let t = self.endpoint[self.labelend[bs]];
                let bt = self.inblossom[t];
                s = self.endpoint[self.labelend[bt]];
                let j = self.endpoint[self.labelend[bt] ^ 1];
                if bt >= self.n {
                    self.augment_blossom(bt, j);
                }
                self.mate[j] = self.labelend[bt];
                p = self.labelend[bt] ^ 1;
            }
        }
    }

    fn solve(&mut self) {
        let n = self.n;
        for _stage in 0..n {
            self.label.fill(0);
            self.bestedge.fill(NONE);
            for b in &mut self.blossombestedges[n..] {
                *b = None;
            }
            self.allowedge.fill(false);
            self.queue.clear();
            for v in 0..n {
                if self.mate[v] == NONE && self.label[self.inblossom[v]] == 0 {
                    self.assign_label(v, 1, NONE);
                }
            }
            let mut augmented = false;
            loop {
                while let Some(v) = self.queue.pop() {
                    if augmented {
                        break;
                    }
                    for a in self.adj_start[v]..self.adj_start[v + 1] {
                        let p = self.adj[a];
                        let k = p / 2;
                        let w = self.endpoint[p];
                        if self.inblossom[v] == self.inblossom[w] {
                            continue;
                        }
                        let mut kslack = 0;
                        if !self.allowedge[k] {
                            kslack = self.slack(k);
                            if kslack <= 0 {
                                self.allowedge[k] = true;
                            }
                        }
                        let bw = self.inblossom[w];
                        if self.allowedge[k] {
                            if self.label[bw] == 0 {
                                self.assign_label(w, 2, p ^ 1);
                            } else if self.label[bw] == 1 {
                                let base = self.scan_blossom(v, w);
                                if base != NONE {
                                    self.add_blossom(base, k);
                                } else {
                                    self.augment_matching(k);
                                    augmented = true;
                                    break;
                                }
                            } else if self.label[w] == 0 {
                                self.label[w] = 2;
                                self.labelend[w] = p ^ 1;
                            }
                        } else if self.label[bw] == 1 {
                            let b = self.inblossom[v];
                            if self.bestedge[b] == NONE || kslack < self.slack(self.bestedge[b]) {
                                self.bestedge[b] = k;
                            }
                        } else if self.label[w] == 0
                            && (self.bestedge[w] == NONE || kslack < self.slack(self.bestedge[w]))
                        {
                            self.bestedge[w] = k;
                        }
                    }
                }
                if augmented {
                    break;
                }
                // No augmenting path on tight edges: move the duals.
                let mut delta = self.dual[..n].iter().copied().min().unwrap_or(0);
                let mut kind = 1u8;
                let mut delta_edge = NONE;
                let mut delta_blossom = NONE;
                for v in 0..n {
                    if self.label[self.inblossom[v]] == 0 && self.bestedge[v] != NONE {
                        let d = self.slack(self.bestedge[v]);
                        if d < delta {
                            delta = d;
                            kind = 2;
                            delta_edge = self.bestedge[v];
                        }
                    }
                }
                for b in 0..2 * n {
                    if self.parent[b] == NONE && self.label[b] == 1 && self.bestedge[b] != NONE {
                        // S–S slacks are even: both ends moved together.
                        let d = self.slack(self.bestedge[b]) / 2;
                        if d < delta {
                            delta = d;
                            kind = 3;
                            delta_edge = self.bestedge[b];
                        }
                    }
                }
                for b in n..2 * n {
                    if self.base[b] != NONE && self.parent[b] == NONE && self.label[b] == 2 && self.dual[b] < delta {
                        delta = self.dual[b];
                        kind = 4;
                        delta_blossom = b;
                    }
                }
                for v in 0..n {
                    match self.label[self.inblossom[v]] {
                        1 => self.dual[v] -= delta,
                        2 => self.dual[v] += delta,
                        _ => {}
                    }
                }
                for b in n..2 * n {
                    if self.base[b] != NONE && self.parent[b] == NONE {
                        match self.label[b] {
                            1 => self.dual[b] += delta,
                            2 => self.dual[b] -= delta,
                            _ => {}
                        }
                    }
                }
                match kind {
                    1 => break,
                    2 => {
                        self.allowedge[delta_edge] = true;
                        let (mut i, j, _) = self.edges[delta_edge];
                        if self.label[self.inblossom[i as usize]] == 0 {
                            i = j;
                        }
                        self.queue.push(i as usize);
                    }
                    3 => {
                        self.allowedge[delta_edge] = true;
                        let (i, _, _) = self.edges[delta_edge];
                        self.queue.push(i as usize);
                    }
                    _ => self.expand_blossom(delta_blossom, false),
                }
            }
            if !augmented {
                break;
            }
            for b in n..2 * n {
                if self.parent[b] == NONE && self.base[b] != NONE && self.label[b] == 1 && self.dual[b] == 0 {
                    self.expand_blossom(b, true);
                }
            }
        }
    }

    fn solution(&self) -> Solution {
        let n = self.n;
        let mate: Vec<Option<u32>> = self
            .mate
            .iter()
            .map(|&p| (p != NONE).then(|| self.endpoint[p] as u32))
            .collect();
        let mut objective2: i128 = self.dual[..n].iter().map(|&d| i128::from(d)).sum();
        for b in n..2 * n {
            if self.base[b] == NONE || self.dual[b] == 0 {
                continue;
            }
            let leaves = self.leaves_of(b).len() as i128;
            objective2 += 2 * i128::from(self.dual[b]) * ((leaves - 1) / 2);
        }
        // Innermost first: up the parent chain of each vertex.
        let blossoms: Vec<Vec<(usize, i64)>> = (0..n)
            .map(|v| {
                let mut chain = Vec::new();
                let mut b = self.parent[v];
                while b != NONE {
                    if self.dual[b] != 0 {
                        chain.push((b, self.dual[b]));
                    }
                    b = self.parent[b];
                }
                chain
            })
            .collect();
        Solution {
            mate,
            vertex_dual: self.dual[..n].to_vec(),
            blossoms,
            dual_objective2: objective2,
        }
    }
}
