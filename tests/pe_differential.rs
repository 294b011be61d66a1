//! Differential test of bootchain's PE header parser (`object` structures plus bootchain's
//! checks) against goblin, an independent parser: for every PE file in the repository's
//! vectors and corpora and the installed systemd stub and boot manager, where both accept the
//! file they must agree on the section table and the certificate table directory. Only
//! bootchain may refuse a file the other accepts (it is stricter); goblin refusing a file
//! bootchain accepts fails the test.
//!
//! goblin's header parser (`Header::parse` and the COFF section table) is compared, not
//! `PE::parse`, which also walks imports, exports and resources that bootchain never reads.

use std::fs::File;
use std::path::{Path, PathBuf};

use bootchain::pe::PeHeaders;

/// The fields both parsers must agree on for one section.
#[derive(Debug, PartialEq, Eq)]
struct Section {
    name: [u8; 8],
    virtual_address: u32,
    virtual_size: u32,
    pointer_to_raw_data: u32,
    size_of_raw_data: u32,
}

/// What both parsers must agree on: sections and the certificate table (offset, size), the
/// latter `None` when absent or all zero.
#[derive(Debug, PartialEq, Eq)]
struct View {
    sections: Vec<Section>,
    certificate_table: Option<(u32, u32)>,
}

fn bootchain_view(path: &Path) -> Result<View, String> {
    let mut f = File::open(path).map_err(|e| e.to_string())?;
    let (h, _) = PeHeaders::read(&mut f).map_err(|e| e.to_string())?;
    Ok(View {
        sections: h
            .sections
            .iter()
            .map(|s| Section {
                name: s.name.raw(),
                virtual_address: s.virtual_address,
                virtual_size: s.virtual_size,
                pointer_to_raw_data: s.pointer_to_raw_data,
                size_of_raw_data: s.size_of_raw_data,
            })
            .collect(),
        certificate_table: h
            .security_directory()
            .map(|d| (d.virtual_address, d.size))
            .filter(|&d| d != (0, 0)),
    })
}

fn goblin_view(bytes: &[u8]) -> Result<View, String> {
    use goblin::pe::header::{Header, SIZEOF_COFF_HEADER, SIZEOF_PE_MAGIC};
    let header = Header::parse(bytes).map_err(|e| e.to_string())?;
    let mut offset = header.dos_header.pe_pointer as usize
        + SIZEOF_PE_MAGIC
        + SIZEOF_COFF_HEADER
        + usize::from(header.coff_header.size_of_optional_header);
    let sections = header
        .coff_header
        .sections(bytes, &mut offset)
        .map_err(|e| e.to_string())?;
    let opt = header
        .optional_header
        .ok_or_else(|| "no optional header".to_string())?;
    Ok(View {
        sections: sections
            .iter()
            .map(|s| Section {
                name: s.name,
                virtual_address: s.virtual_address,
                virtual_size: s.virtual_size,
                pointer_to_raw_data: s.pointer_to_raw_data,
                size_of_raw_data: s.size_of_raw_data,
            })
            .collect(),
        certificate_table: opt
            .data_directories
            .get_certificate_table()
            .map(|d| (d.virtual_address, d.size)),
    })
}

/// Every file of a directory (sorted), or the files matching `ext`.
fn files(dir: &Path, ext: Option<&str>) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| ext.is_none_or(|x| p.extension().is_some_and(|e| e == x)))
        .collect();
    v.sort();
    v
}

#[test]
fn bootchain_and_goblin_agree_on_pe_headers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-vectors");
    let stub = PathBuf::from("/usr/lib/systemd/boot/efi/linuxx64.efi.stub");
    let sdboot = PathBuf::from("/usr/lib/systemd/boot/efi/systemd-bootx64.efi");
    for p in [&stub, &sdboot] {
        assert!(
            p.is_file(),
            "{} is missing (the suite installs it)",
            p.display()
        );
    }
    let mut all = files(&root.join("hostile"), Some("efi"));
    all.extend(files(&root.join("fuzz/pe_uki"), None));
    all.extend(files(&root.join("fuzz/authenticode"), None));
    all.push(stub.clone());
    all.push(sdboot.clone());

    let (mut compared, mut only_bootchain_refuses, mut both_refuse) = (0, 0, 0);
    let mut goblin_only_refuses = Vec::new();
    let mut mismatches = Vec::new();
    for p in &all {
        let bytes = std::fs::read(p).expect("read vector");
        let ours = bootchain_view(p);
        let theirs = goblin_view(&bytes);
        match (ours, theirs) {
            (Ok(a), Ok(b)) => {
                compared += 1;
                if a != b {
                    mismatches.push(format!(
                        "{}:\n  bootchain {a:?}\n  goblin    {b:?}",
                        p.display()
                    ));
                }
            }
            (Err(_), Ok(_)) => only_bootchain_refuses += 1,
            (Ok(_), Err(e)) => goblin_only_refuses.push(format!("{}: {e}", p.display())),
            (Err(_), Err(_)) => both_refuse += 1,
        }
        if p == &stub || p == &sdboot {
            assert!(
                bootchain_view(p).is_ok() && goblin_view(&bytes).is_ok(),
                "{} must be accepted by both parsers",
                p.display()
            );
        }
    }
    eprintln!(
        "{} files: {compared} accepted by both and compared, {only_bootchain_refuses} refused by \
         bootchain only, {both_refuse} refused by both",
        all.len()
    );
    assert!(
        mismatches.is_empty(),
        "parsers disagree:\n{}",
        mismatches.join("\n")
    );
    assert!(
        goblin_only_refuses.is_empty(),
        "goblin refuses files bootchain accepts:\n{}",
        goblin_only_refuses.join("\n")
    );
    assert!(compared >= 2);
}
