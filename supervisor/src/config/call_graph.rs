//! The plugins' `calls` taken together: no cycle may run through them.
//!
//! A plugin calling itself is refused where its entry is read (validate.rs); a cycle
//! through two or more plugins has the same fault spread out. Under load each plugin's
//! `max_in_flight` fills with handlers waiting for calls to the next one, whose places
//! are held by handlers waiting for calls back: every call then waits for its deadline,
//! and every breaker on the cycle opens.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use super::Config;
use super::load::{Problems, Seg};

/// Why a cycle is refused, after the cycle itself.
pub(crate) const WHY: &str = "plugins' calls may not form a cycle: under load each one's handlers would fill its \
     max_in_flight waiting for the next one's, and every call would wait for its deadline";

/// Records one problem per cycle of `calls`, at the entry of the cycle's first plugin (in
/// the file's order) that leads into it, naming the shortest such cycle. Self-calls and
/// entries naming no plugin are left to the per-entry checks.
pub(super) fn check(config: &Config, p: &mut Problems<'_>) {
    let plugins: Vec<(&str, &[String])> =
        config.plugins.iter().map(|pl| (pl.name.as_str(), pl.calls.as_slice())).collect();
    for cycle in cycles(&plugins) {
        let at = [Seg::Key("plugin"), Seg::Index(cycle.first), Seg::Key("calls"), Seg::Index(cycle.entry)];
        p.at(&at, format!("{}: {WHY}", cycle.said));
    }
}

/// One cycle of `calls`.
pub(crate) struct Cycle {
    /// The place of its first plugin in the list given.
    pub first: usize,
    /// The `calls` entry of that plugin that leads into the cycle.
    pub entry: usize,
    /// `plugin "a": calls "b", which calls "a"`.
    pub said: String,
}

/// The cycles of `calls` among `plugins` (each a name and its `calls`), one for each
/// group of plugins that can reach one another: the shortest through the group's first.
pub(crate) fn cycles(plugins: &[(&str, &[String])]) -> Vec<Cycle> {
    let graph = Graph::of(plugins);
    let mut found = Vec::new();
    for component in graph.strongly_connected() {
        if component.len() < 2 {
            continue;
        }
        let Some(&first) = component.iter().min() else { continue };
        let Some((entry, through)) = graph.shortest_cycle(first, &component) else { continue };
        found.push(Cycle { first, entry, said: said(plugins, first, &through) });
    }
    found.sort_by_key(|c| c.first);
    found
}

/// The shortest cycle of `calls` through `plugins[at]`, if one runs through it: what a
/// change of that plugin's `calls` alone is refused for. [`cycles`] names each group's
/// cycle from its first plugin, which another cycle of the group may leave out.
pub(crate) fn cycle_through(plugins: &[(&str, &[String])], at: usize) -> Option<Cycle> {
    let graph = Graph::of(plugins);
    let all: Vec<usize> = (0..plugins.len()).collect();
    let (entry, through) = graph.shortest_cycle(at, &all)?;
    Some(Cycle { first: at, entry, said: said(plugins, at, &through) })
}

/// `plugin "a": calls "b", which calls "a"`, for the way from `from` that passes `through`.
fn said(plugins: &[(&str, &[String])], from: usize, through: &[usize]) -> String {
    let mut said = format!("plugin {:?}: ", plugins[from].0);
    for (k, &node) in through.iter().enumerate() {
        let verb = if k == 0 { "calls" } else { ", which calls" };
        said.push_str(&format!("{verb} {:?}", plugins[node].0));
    }
    said
}

/// Plugins by their place in the file; an edge keeps the `calls` entry it came from.
struct Graph {
    edges: Vec<Vec<(usize, usize)>>,
}

impl Graph {
    fn of(plugins: &[(&str, &[String])]) -> Self {
        // A duplicate name is refused elsewhere; its first entry stands for it here.
        let mut index = HashMap::new();
        for (i, (name, _)) in plugins.iter().enumerate() {
            index.entry(*name).or_insert(i);
        }
        let edges = plugins
            .iter()
            .enumerate()
            .map(|(i, (_, calls))| {
                let mut out: Vec<(usize, usize)> = Vec::new();
                for (entry, name) in calls.iter().enumerate() {
                    if let Some(&to) = index.get(name.as_str())
                        && to != i
                        && !out.iter().any(|&(_, t)| t == to)
                    {
                        out.push((entry, to));
                    }
                }
                out
            })
            .collect();
        Graph { edges }
    }

    /// Tarjan's algorithm, without recursion: a config of a thousand plugins in a chain
    /// would otherwise go a thousand frames deep.
    fn strongly_connected(&self) -> Vec<Vec<usize>> {
        const UNSEEN: usize = usize::MAX;
        let n = self.edges.len();
        let (mut order, mut low, mut on_stack) = (vec![UNSEEN; n], vec![0; n], vec![false; n]);
        let (mut stack, mut components, mut next) = (Vec::new(), Vec::new(), 0);
        for root in 0..n {
            if order[root] != UNSEEN {
                continue;
            }
            // Each frame: a node and how many of its edges were followed.
            let mut frames = vec![(root, 0)];
            order[root] = next;
            low[root] = next;
            next += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(&mut (v, ref mut followed)) = frames.last_mut() {
                if let Some(&(_, w)) = self.edges[v].get(*followed) {
                    *followed += 1;
                    if order[w] == UNSEEN {
                        order[w] = next;
                        low[w] = next;
                        next += 1;
                        stack.push(w);
                        on_stack[w] = true;
                        frames.push((w, 0));
                    } else if on_stack[w] {
                        low[v] = low[v].min(order[w]);
                    }
                    continue;
                }
                frames.pop();
                if let Some(&(parent, _)) = frames.last() {
                    low[parent] = low[parent].min(low[v]);
                }
                if low[v] == order[v] {
                    let mut component = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        component.push(w);
                        if w == v {
                            break;
                        }
                    }
                    components.push(component);
                }
            }
        }
        components
    }

    /// The shortest way from `start` back to it inside `within`: the `calls` entry of
    /// `start` it leaves by, and the plugins it passes, ending with `start`.
    fn shortest_cycle(&self, start: usize, within: &[usize]) -> Option<(usize, Vec<usize>)> {
        let mut inside = vec![false; self.edges.len()];
        for &v in within {
            inside[v] = true;
        }
        let mut came_from: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(v) = queue.pop_front() {
            for &(_, w) in &self.edges[v] {
                if !inside[w] {
                    continue;
                }
                if w == start {
                    let mut path = vec![start, v];
                    while let Some(&before) = came_from.get(path.last()?) {
                        path.push(before);
                    }
                    // Walked backwards, from start round to start again: the second
                    // start goes, and the first is the cycle's end.
                    path.pop();
                    path.reverse();
                    let entry = self.edges[start].iter().find(|&&(_, t)| t == path[0])?.0;
                    return Some((entry, path));
                }
                if let Entry::Vacant(e) = came_from.entry(w) {
                    e.insert(v);
                    queue.push_back(w);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{Config, ConfigError, load};

    fn parse(plugins: &[(&str, &[&str])]) -> Result<Config, ConfigError> {
        let mut text =
            String::from("[supervisor.defaults]\ntier = \"none\"\n[supervisor.sandbox]\nallow_unsandboxed = true\n");
        for (name, calls) in plugins {
            let calls: Vec<String> = calls.iter().map(|c| format!("{c:?}")).collect();
            text.push_str(&format!(
                "[[plugin]]\nname = {name:?}\nbinary = \"/bin/true\"\ncalls = [{}]\n",
                calls.join(", ")
            ));
        }
        load::parse(&text, Path::new("/etc/ps/test.toml"))
    }

    fn only_problem(err: ConfigError) -> (String, String) {
        let problems = err.problems();
        assert_eq!(problems.len(), 1, "{err}");
        (problems[0].key.clone(), problems[0].message.clone())
    }

    #[test]
    fn two_plugins_calling_each_other_are_refused() {
        let err = parse(&[("a", &["b"]), ("b", &["a"])]).unwrap_err();
        assert_eq!(
            only_problem(err),
            ("plugin[0].calls[0]".to_owned(), format!("plugin \"a\": calls \"b\", which calls \"a\": {}", super::WHY))
        );
    }

    #[test]
    fn a_cycle_of_three_is_refused_at_its_first_plugin_in_the_file() {
        let err = parse(&[("x", &[]), ("c", &["a"]), ("a", &["x", "b"]), ("b", &["c"])]).unwrap_err();
        assert_eq!(
            only_problem(err),
            (
                "plugin[1].calls[0]".to_owned(),
                format!("plugin \"c\": calls \"a\", which calls \"b\", which calls \"c\": {}", super::WHY)
            )
        );
    }

    #[test]
    fn a_chain_and_a_diamond_are_accepted() {
        parse(&[("a", &["b"]), ("b", &["c"]), ("c", &[])]).unwrap();
        parse(&[("a", &["b", "c"]), ("b", &["d"]), ("c", &["d"]), ("d", &[])]).unwrap();
    }

    #[test]
    fn a_long_chain_is_checked_without_deep_recursion() {
        let names: Vec<String> = (0..1000).map(|i| format!("p{i}")).collect();
        let calls: Vec<[&str; 1]> = names.iter().skip(1).map(|n| [n.as_str()]).chain([["p0"]]).collect();
        let plugins: Vec<(&str, &[&str])> = names.iter().zip(&calls).map(|(n, c)| (n.as_str(), &c[..])).collect();
        let err = parse(&plugins[..]).unwrap_err();
        let (key, message) = only_problem(err);
        assert_eq!(key, "plugin[0].calls[0]");
        assert!(message.starts_with("plugin \"p0\": calls \"p1\", which calls \"p2\""), "{message}");
        assert!(message.ends_with(&format!("which calls \"p999\", which calls \"p0\": {}", super::WHY)), "{message}");
    }

    #[test]
    fn a_cycle_through_a_plugin_is_found_where_its_group_is_named_from_another() {
        let (a, b, c) = (vec!["b".to_owned()], vec!["a".to_owned(), "c".to_owned()], vec!["b".to_owned()]);
        let plugins: Vec<(&str, &[String])> = vec![("a", &a), ("b", &b), ("c", &c)];
        let named: Vec<String> = super::cycles(&plugins).into_iter().map(|c| c.said).collect();
        assert_eq!(named, ["plugin \"a\": calls \"b\", which calls \"a\""], "one group, named from its first");
        let through = super::cycle_through(&plugins, 2).map(|c| (c.entry, c.said));
        assert_eq!(through, Some((0, "plugin \"c\": calls \"b\", which calls \"c\"".to_owned())));
        let none: Vec<(&str, &[String])> = vec![("a", &a), ("b", &a[..0]), ("c", &c)];
        assert!(super::cycle_through(&none, 2).is_none(), "c calls b, which calls nobody");
    }
}
