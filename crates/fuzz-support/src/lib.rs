//! Property-based fuzzing of the project's parsers, on stable Rust with `proptest`.
//!
//! Owns the runner every fuzz test uses ([`Fuzz`]) and the structure-aware input strategies
//! ([`der`], [`text`]): valid messages mutated one element or field at a time, truncated, with
//! lying lengths, oversized, as well as random bytes. Must not hold any parser: the crates that own
//! a parser fuzz it in their own tests, with this crate as a dev-dependency only.
//!
//! What a run does (see [`Fuzz::try_run`]):
//!
//! 1. the seed is `PROPTEST_RNG_SEED` when set (to replay a run), otherwise a fresh one per run;
//!    it is printed before the first case;
//! 2. the case count is `PROPTEST_CASES` when set (the long run sets a million), otherwise the
//!    test's own short default (CI);
//! 3. the cases kept in the crate's `proptest-regressions/NAME.txt` run first (proptest's failure
//!    persistence); a new failure is shrunk, its seed added to that file and printed;
//! 4. every case must finish within a time bound (`FUZZ_CASE_SECS`, 10 s by default): a slower one
//!    fails like a panic (and is kept); one still running after six times the bound is a hang, and
//!    a watchdog ends the process after printing the seed to replay it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod der;
pub mod text;

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use proptest;
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, RngSeed, TestCaseError, TestError, TestRunner};

/// One fuzz target: a name, where its regression cases are kept, and how many cases to run.
#[derive(Debug, Clone)]
pub struct Fuzz {
    name: String,
    regressions: PathBuf,
    cases: u32,
    case_bound: Duration,
}

/// A run that found nothing.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed of the run (`PROPTEST_RNG_SEED` replays it).
    pub seed: u64,
    /// New cases run (the kept regression cases are not counted).
    pub cases: u32,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// A run that found a failing case.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The seed of the run (`PROPTEST_RNG_SEED` replays it).
    pub seed: u64,
    /// The file the failing case's seed was added to.
    pub regression_file: PathBuf,
    /// Why the case failed (a panic's message, a failed check, the time bound), and the shrunk
    /// input.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (seed {seed}; replay with PROPTEST_RNG_SEED={seed}; the case is kept in {})",
            self.message,
            self.regression_file.display(),
            seed = self.seed
        )
    }
}

/// A fresh seed per run: the standard library's per-process random hasher keys, and the time.
fn fresh_seed() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number"),
    }
}

/// The seed of this run: `PROPTEST_RNG_SEED` when set, otherwise a fresh one.
pub fn run_seed() -> u64 {
    env_number("PROPTEST_RNG_SEED").unwrap_or_else(fresh_seed)
}

/// Whether a case is running and since when (nanoseconds after `base`, 0 when none is).
struct Watch {
    base: Instant,
    started: AtomicU64,
    done: AtomicBool,
}

/// Marks the case as finished even when it panics.
struct CaseGuard<'a>(&'a Watch);

impl Drop for CaseGuard<'_> {
    fn drop(&mut self) {
        self.0.started.store(0, Ordering::SeqCst);
    }
}

impl Fuzz {
    /// A target named `name` of the crate at `manifest_dir` (pass `env!("CARGO_MANIFEST_DIR")`):
    /// regression cases in `manifest_dir/proptest-regressions/NAME.txt`, `default_cases` cases
    /// unless `PROPTEST_CASES` says otherwise.
    pub fn new(manifest_dir: &str, name: &str, default_cases: u32) -> Fuzz {
        let file = format!("{name}.txt");
        Fuzz {
            name: name.to_string(),
            regressions: Path::new(manifest_dir).join("proptest-regressions").join(file),
            cases: env_number("PROPTEST_CASES").unwrap_or(default_cases),
            case_bound: Duration::from_secs(env_number("FUZZ_CASE_SECS").unwrap_or(10)),
        }
    }

    /// Keeps the regression cases in `file` instead.
    pub fn regressions_in(mut self, file: PathBuf) -> Fuzz {
        self.regressions = file;
        self
    }

    /// Runs exactly `cases` new cases, whatever `PROPTEST_CASES` says.
    pub fn cases(mut self, cases: u32) -> Fuzz {
        self.cases = cases;
        self
    }

    /// The time bound of one case.
    pub fn case_bound(mut self, bound: Duration) -> Fuzz {
        self.case_bound = bound;
        self
    }

    /// Runs `check` on the strategy's values with the seed `seed`; see the crate's doc for the
    /// steps.
    pub fn try_run_seeded<S>(
        &self,
        seed: u64,
        strategy: S,
        check: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) -> Result<Report, Failure>
    where
        S: Strategy,
    {
        println!(
            "fuzz {}: seed {seed} (replay with PROPTEST_RNG_SEED={seed}), {} cases",
            self.name, self.cases
        );
        if let Some(dir) = self.regressions.parent() {
            // Without the directory proptest cannot keep a failing case: a failure to create it
            // shows in the failure's message (proptest names the file it could not open).
            let _ = std::fs::create_dir_all(dir);
        }
        // Failure persistence takes a `&'static str`: one small string per run, in tests.
        let file: &'static str = Box::leak(self.regressions.to_string_lossy().into_owned().into_boxed_str());
        let config = Config {
            cases: self.cases,
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
            max_shrink_time: 120_000,
            max_shrink_iters: 2048,
            ..Config::default()
        };
        let watch = Arc::new(Watch {
            base: Instant::now(),
            started: AtomicU64::new(0),
            done: AtomicBool::new(false),
        });
        let watchdog = {
            let watch = watch.clone();
            let name = self.name.clone();
            let hang = self.case_bound * 6;
            std::thread::Builder::new()
                .name(format!("fuzz-watchdog-{name}"))
                .spawn(move || {
                    while !watch.done.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(200));
                        let started = watch.started.load(Ordering::SeqCst);
                        if started != 0 {
                            let running = watch.base.elapsed().saturating_sub(Duration::from_nanos(started));
                            if running > hang {
                                eprintln!(
                                    "fuzz {name}: a case has run for {running:?}, over {hang:?}: a hang. \
                                     Replay with PROPTEST_RNG_SEED={seed}"
                                );
                                std::process::abort();
                            }
                        }
                    }
                })
                .ok()
        };
        let bound = self.case_bound;
        let mut runner = TestRunner::new(config);
        let start = Instant::now();
        let result = runner.run(&strategy, |value| {
            let began = Instant::now();
            let nanos = u64::try_from(watch.base.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
            watch.started.store(nanos, Ordering::SeqCst);
            let guard = CaseGuard(&watch);
            let outcome = check(value);
            drop(guard);
            let took = began.elapsed();
            if outcome.is_ok() && took > bound {
                return Err(TestCaseError::fail(format!(
                    "one case took {took:?}, over the bound of {bound:?}"
                )));
            }
            outcome
        });
        let elapsed = start.elapsed();
        watch.done.store(true, Ordering::SeqCst);
        if let Some(w) = watchdog {
            let _ = w.join();
        }
        match result {
            Ok(()) => {
                let rate = f64::from(self.cases) / elapsed.as_secs_f64().max(1e-9);
                println!(
                    "fuzz {}: {} cases passed in {elapsed:.1?} ({rate:.0} cases/s), seed {seed}",
                    self.name, self.cases
                );
                Ok(Report { seed, cases: self.cases, elapsed })
            }
            Err(e) => {
                let message = match e {
                    TestError::Abort(why) => format!("fuzz {}: aborted: {why}", self.name),
                    TestError::Fail(why, value) => {
                        let mut shown = format!("{value:?}");
                        if shown.len() > 4000 {
                            let mut cut = 4000;
                            while !shown.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            shown.truncate(cut);
                            shown.push_str("...");
                        }
                        format!("fuzz {}: {why}; minimal failing input: {shown}", self.name)
                    }
                };
                let failure = Failure { seed, regression_file: self.regressions.clone(), message };
                eprintln!("{failure}");
                Err(failure)
            }
        }
    }

    /// [`Fuzz::try_run_seeded`] with this run's seed ([`run_seed`]).
    pub fn try_run<S: Strategy>(
        &self,
        strategy: S,
        check: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) -> Result<Report, Failure> {
        self.try_run_seeded(run_seed(), strategy, check)
    }

    /// [`Fuzz::try_run`], panicking with the failure (seed, kept case, shrunk input).
    pub fn run<S: Strategy>(
        &self,
        strategy: S,
        check: impl Fn(S::Value) -> Result<(), TestCaseError>,
    ) -> Report {
        match self.try_run(strategy, check) {
            Ok(r) => r,
            Err(f) => panic!("{f}"),
        }
    }
}

/// Asserts that `strategy` finds the panic planted in `planted` (a wrapper around a real parser
/// that panics on some inputs the real one refuses cleanly): the run fails naming the panic and
/// its seed, the case is kept in a regression file, and a second run with a different seed and
/// no new cases fails again on the kept case alone.
pub fn assert_finds_planted_panic<S>(
    name: &str,
    cases: u32,
    strategy: S,
    planted: impl Fn(S::Value) -> Result<(), TestCaseError>,
    panic_message: &str,
) where
    S: Strategy + Clone,
{
    let dir = std::env::temp_dir().join(format!("fuzz-planted-{name}-{}", std::process::id()));
    let file = dir.join(format!("{name}.txt"));
    let _ = std::fs::remove_dir_all(&dir);
    let target = Fuzz::new(env!("CARGO_MANIFEST_DIR"), name, cases).cases(cases).regressions_in(file.clone());
    let seed = run_seed();
    let failure =
        target.try_run_seeded(seed, strategy.clone(), &planted).expect_err("the planted panic was not found");
    assert_eq!(failure.seed, seed);
    assert!(failure.message.contains(panic_message), "unexpected failure: {}", failure.message);
    assert!(failure.to_string().contains(&format!("PROPTEST_RNG_SEED={seed}")), "{failure}");
    let kept = std::fs::read_to_string(&file).expect("the failing case was not kept");
    assert!(kept.lines().any(|l| l.starts_with("cc ")), "no seed line in {}: {kept}", file.display());
    // The kept case alone (no new cases, another seed) finds it again.
    let again = target.clone().cases(0).try_run_seeded(seed.wrapping_add(1), strategy, &planted);
    let again = again.expect_err("the kept regression case did not fail again");
    assert!(again.message.contains(panic_message), "{}", again.message);
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_passing_property_reports_its_seed_and_cases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = Fuzz::new(env!("CARGO_MANIFEST_DIR"), "passing", 50)
            .cases(50)
            .regressions_in(dir.path().join("passing.txt"))
            .try_run_seeded(7, any::<u8>(), |_| Ok(()))
            .expect("passes");
        assert_eq!((r.seed, r.cases), (7, 50));
        assert!(!dir.path().join("passing.txt").exists(), "nothing to keep");
    }

    #[test]
    fn seeds_differ_per_run() {
        if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
            assert_ne!(run_seed(), run_seed());
        }
    }

    #[test]
    fn a_slow_case_fails_on_the_time_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Fuzz::new(env!("CARGO_MANIFEST_DIR"), "slow", 3)
            .cases(3)
            .case_bound(Duration::from_millis(20))
            .regressions_in(dir.path().join("slow.txt"))
            .try_run_seeded(1, any::<u8>(), |_| {
                std::thread::sleep(Duration::from_millis(40));
                Ok(())
            })
            .expect_err("over the bound");
        assert!(f.message.contains("over the bound"), "{}", f.message);
    }

    #[test]
    fn a_planted_panic_in_a_length_reader_is_found() {
        // A DER reader that trusts the outer length: the classic out-of-bounds slice.
        let valid = vec![vec![0x30, 0x06, 0x02, 0x01, 0x05, 0x04, 0x01, 0xaa]];
        assert_finds_planted_panic(
            "support-planted",
            2000,
            der::inputs(valid),
            |input: Vec<u8>| {
                if input.len() >= 2 && input[0] == 0x30 && input[1] < 0x80 {
                    let body = &input[2..2 + usize::from(input[1])];
                    std::hint::black_box(body);
                }
                Ok(())
            },
            "range end index",
        );
    }
}
