//! Verify a TCG event log (`/sys/kernel/security/tpm0/binary_bios_measurements`, or a
//! confidential VM's CCEL log) against the PCR values a TPM quote or `tpm2_pcrread` reported:
//! replay the log, check every event whose data can be checked, compare the replay with the
//! reported values.
//!
//! ```text
//! cargo run --example verify_eventlog -- LOG [PCRS.json]
//! # PCRS.json: {"sha256": {"0": "hex", ...}} (bootchain eventlog replay --json's shape)
//! ```
//! Exit status 0 when every check passes.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        eprintln!("usage: verify_eventlog LOG [PCRS.json]");
        std::process::exit(2);
    };
    let log = bootchain::eventlog::EventLog::parse(&std::fs::read(path)?)?;
    let replayed = log.replay();
    let mut ok = true;
    for e in &log.events {
        if bootchain::eventlog::check_data(e) == bootchain::eventlog::DataCheck::Mismatch {
            ok = false;
            let view = bootchain::eventlog::EventView::of(e);
            println!(
                "offset {}: PCR {} {}: the digest is not the hash of the data ({})",
                view.offset, e.pcr, view.event_type, view.description
            );
        }
    }
    if let Some(pcrs) = args.get(1) {
        let reported = bootchain::pcr::parse_pcr_values_json(&std::fs::read_to_string(pcrs)?)?;
        for m in bootchain::eventlog::verify_replay(&log, &reported) {
            ok = false;
            println!(
                "PCR {} {}: the log replays to {}, reported {}",
                m.pcr, m.bank, m.replayed, m.actual
            );
        }
    }
    for ((bank, pcr), v) in &replayed {
        println!("{pcr}:{bank}={v}");
    }
    println!(
        "{} events, {}",
        log.events.len(),
        if ok { "all checks passed" } else { "FAILED" }
    );
    std::process::exit(if ok { 0 } else { 1 });
}
