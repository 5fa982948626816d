//! Signatures per second and CPU per signature: the PKCS#11 backend (`Pkcs11Custody`'s signer),
//! the same token's bare `C_Sign` on one session (the module's own cost, the baseline), and the
//! soft store, with 1 and 2 threads, for P-256 and RSA-2048. Run by `bench/hsm/run.sh`, which
//! makes a SoftHSM2 token and sets `SOFTHSM2_CONF`.
//!
//! Usage: `pkcs11_sign_rate MODULE TOKEN_LABEL PIN_FILE SECONDS`
#![allow(clippy::unwrap_used)] // a benchmark program: a failure ends it

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use hsm_sim::{
    HsmSim, KeyCustody, KeyHandle, KeyPurpose, KeyType, MasterKeySource, Pkcs11Config, Pkcs11Custody,
};

/// CPU seconds (user + system) of this process so far, from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name (which is in parentheses): utime is the 14th field overall.
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

struct Rate {
    per_sec: f64,
    cpu_us: f64,
}

/// Runs `sign` on `threads` threads for `secs`; signatures/s and CPU µs per signature.
fn measure(threads: usize, secs: f64, make: &(dyn Fn() -> Box<dyn FnMut() + Send> + Sync)) -> Rate {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            let mut f = make();
            let stop = stop.clone();
            let count = count.clone();
            s.spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    f();
                    n += 1;
                }
                count.fetch_add(n, Ordering::Relaxed);
            });
        }
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
    });
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let n = count.load(Ordering::Relaxed) as f64;
    Rate { per_sec: n / wall, cpu_us: cpu / n * 1e6 }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 5, "usage: pkcs11_sign_rate MODULE TOKEN_LABEL PIN_FILE SECONDS");
    let (module, label, secs) = (&args[1], &args[2], args[4].parse::<f64>().unwrap());
    let pin = std::fs::read_to_string(&args[3]).unwrap().lines().next().unwrap().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let token = Pkcs11Custody::open(Pkcs11Config {
        module: module.into(),
        token_label: label.clone(),
        pin: pin.clone(),
        escrow_dir: tmp.path().join("escrow"),
    })
    .unwrap();
    let soft = HsmSim::open(tmp.path().join("soft"), &MasterKeySource::KeyFile).unwrap();

    // The bare module on its own session, for the baseline.
    let ctx = Pkcs11::new(module).unwrap();
    let _ = ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = ctx
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == label)
        .unwrap();
    {
        let login = ctx.open_rw_session(slot).unwrap();
        let _ = login.login(UserType::User, Some(&AuthPin::from(pin.as_str())));
        std::mem::forget(login); // keeps the login for the whole run
    }

    let msg = vec![0x5au8; 600]; // about the size of a leaf certificate's TBS
    println!("| key | path | threads | signatures/s | CPU µs per signature |");
    println!("|---|---|---|---|---|");
    for (name, kt) in [("P-256", KeyType::P256), ("RSA-2048", KeyType::Rsa2048)] {
        let handle: KeyHandle = format!("bench/{}", kt.name()).parse().unwrap();
        if !token.contains(&handle).unwrap() {
            token.generate(&handle, kt, KeyPurpose::CaSigning).unwrap();
        }
        soft.generate(&handle, kt, KeyPurpose::CaSigning).unwrap();
        let token_signer = token.signer(&handle).unwrap();
        let soft_signer = soft.signer(&handle).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, &msg).as_ref().to_vec();
        let mut rows = Vec::new();
        for threads in [1usize, 2] {
            let raw = measure(threads, secs, &|| {
                let s = ctx.open_rw_session(slot).unwrap();
                let key = s
                    .find_objects(&[
                        Attribute::Class(ObjectClass::PRIVATE_KEY),
                        Attribute::Label(handle.as_str().as_bytes().to_vec()),
                    ])
                    .unwrap()[0];
                let ecdsa = kt == KeyType::P256;
                let data = if ecdsa { digest.clone() } else { msg.clone() };
                Box::new(move || {
                    // Mechanism is not Send: made per call, as the backend does.
                    let mech = if ecdsa { Mechanism::Ecdsa } else { Mechanism::Sha256RsaPkcs };
                    s.sign(&mech, key, &data).unwrap();
                })
            });
            let via = measure(threads, secs, &|| {
                let signer = token_signer.clone();
                let msg = msg.clone();
                Box::new(move || {
                    signer.sign(&msg).unwrap();
                })
            });
            let sw = measure(threads, secs, &|| {
                let signer = soft_signer.clone();
                let msg = msg.clone();
                Box::new(move || {
                    signer.sign(&msg).unwrap();
                })
            });
            for (path, r) in
                [("bare C_Sign (SoftHSM2)", &raw), ("pkcs11 backend", &via), ("soft backend", &sw)]
            {
                println!("| {name} | {path} | {threads} | {:.0} | {:.1} |", r.per_sec, r.cpu_us);
            }
            rows.push((threads, (via.cpu_us - raw.cpu_us) / raw.cpu_us * 100.0));
        }
        for (threads, over) in rows {
            println!("{name}, {threads} thread(s): the PKCS#11 path adds {over:+.1} % CPU per signature over bare C_Sign");
        }
    }
}
