//! `permdrift keygen`: an ed25519 key pair for signing requests to the
//! operator. The private key goes to a new file (PKCS#8 PEM, mode 0600,
//! never overwritten); the public key is printed in the form the operator's
//! config takes (`api.authentication.keys[].publicKey`).

use super::Ctx;
use crate::signature::SecretKey;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  permdrift keygen -o alice.key --id alice\n  \
    # then add the printed entry under api.authentication.keys in the operator's config, and:\n  \
    permdrift baseline accept --source acct --key alice.key --key-id alice --fingerprint sha256:..."
)]
pub struct KeygenArgs {
    /// Where to write the private key (must not exist yet).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// The name to list the key under in the operator's config.
    #[arg(long, value_name = "ID", default_value = "me")]
    id: String,
}

pub fn run(ctx: &Ctx, args: KeygenArgs) -> anyhow::Result<u8> {
    let key = SecretKey::from_seed(rand::random::<[u8; 32]>());
    let pem = key.to_pem()?;
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&args.output)
            .with_context(|| {
                format!(
                    "{}: cannot create the key file (it must not exist yet)",
                    args.output.display()
                )
            })?
    };
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("{}: cannot write the key", args.output.display()))?;
    ctx.info(&format!(
        "wrote the private key to {} (keep it secret); add this to the operator's config:",
        args.output.display()
    ));
    println!(
        "api:\n  authentication:\n    keys:\n    - id: {}\n      publicKey: {}",
        args.id,
        key.public().to_base64()
    );
    Ok(0)
}
