//! `http-sink PORT ANSWER_BYTES`: bench/seal.sh's transport ceiling. An HTTP server on the stack
//! `pki serve` uses (actix-web, as many workers a CPU as `pki serve` starts) that reads each POST
//! body in full and answers ANSWER_BYTES of `message/rfc822`, the size of a sealed message,
//! starting with the header seal-bench checks for. What it does not do is all that sealing costs:
//! what seal-bench measures against it is what moving the same bytes through HTTP on these cores
//! allows at most. Prints `listening` when it accepts connections.

use actix_web::{web, App, HttpResponse, HttpServer};

/// `pki serve`'s default workers a CPU (`ServerSettings::DEFAULT_WORKERS_PER_CPU`).
const WORKERS_PER_CPU: usize = 4;

/// The largest body read (a bulk request of 100 statements is about 14 MB).
const MAX_BODY: usize = 64 << 20;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, answer_bytes] = args.as_slice() else {
        eprintln!("usage: http-sink PORT ANSWER_BYTES");
        std::process::exit(2);
    };
    let (Ok(port), Ok(answer_bytes)) = (port.parse::<u16>(), answer_bytes.parse::<usize>()) else {
        eprintln!("http-sink: PORT must be a port number and ANSWER_BYTES a number of bytes");
        std::process::exit(2);
    };
    let mut answer =
        b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\n\r\n".to_vec();
    answer.resize(answer_bytes.max(answer.len()), b'A');
    let answer = web::Bytes::from(answer);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    actix_web::rt::System::new().block_on(async move {
        let server = HttpServer::new(move || {
            let answer = answer.clone();
            App::new().app_data(web::PayloadConfig::new(MAX_BODY)).default_service(web::post().to(
                move |body: web::Bytes| {
                    let answer = answer.clone();
                    async move {
                        if body.is_empty() {
                            return HttpResponse::BadRequest().finish();
                        }
                        HttpResponse::Ok().content_type("message/rfc822").body(answer)
                    }
                },
            ))
        })
        .workers(cpus * WORKERS_PER_CPU)
        .bind(("127.0.0.1", port))?
        .run();
        println!("listening");
        server.await
    })
}
