//! `palisade events publish|list|retry`: publishing events and following their
//! deliveries, on the data directory's registry or, with `--server`, through the gateway's
//! admin API.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use palisade_registry::{Delivery, DeliveryState, NewEvent};

use crate::commands::admin_client::{DeliveryReply, EventReply, ServerArgs};
use crate::datadir::DataDir;

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Publish an event to a tenant's installs that subscribe to its topic.
    Publish(PublishArgs),
    /// List a tenant's deliveries, oldest first.
    List(ListArgs),
    /// Retry a dead delivery (or a pending one between attempts) now.
    Retry(RetryArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// The topic, e.g. `ticket.created`.
    #[arg(long)]
    pub topic: String,
    /// The event's id: publishing it again for the tenant does nothing.
    #[arg(long)]
    pub id: String,
    /// The payload, any JSON value.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    #[command(flatten)]
    pub remote: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// Only deliveries in this state.
    #[arg(long, value_parser = ["pending", "delivered", "dead"])]
    pub state: Option<String>,
    /// At most this many.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    #[command(flatten)]
    pub remote: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RetryArgs {
    /// The tenant.
    #[arg(long)]
    pub tenant: String,
    /// The delivery id (from `palisade events list`).
    pub delivery: String,
    #[command(flatten)]
    pub remote: ServerArgs,
}

pub(crate) async fn events(data_dir: &DataDir, command: EventsCommand) -> Result<()> {
    match command {
        EventsCommand::Publish(args) => publish(data_dir, args).await,
        EventsCommand::List(args) => list(data_dir, args).await,
        EventsCommand::Retry(args) => retry(data_dir, args).await,
    }
}

async fn publish(data_dir: &DataDir, args: PublishArgs) -> Result<()> {
    let payload: serde_json::Value =
        serde_json::from_str(&args.payload).context("--payload is not JSON")?;
    let reply = match args.remote.client()? {
        Some(client) => {
            let event = serde_json::json!({
                "tenant_id": args.tenant,
                "topic": args.topic,
                "id": args.id,
                "payload": payload,
            });
            client.publish_event(&event).await?
        }
        None => {
            let registry = data_dir.registry().await?;
            let published = registry
                .publish_event(NewEvent {
                    tenant_id: &args.tenant,
                    topic: &args.topic,
                    key: &args.id,
                    payload: &payload.to_string(),
                })
                .await?;
            EventReply {
                event_id: published.event_id,
                deliveries: published.deliveries,
                duplicate: published.duplicate,
            }
        }
    };
    let again = if reply.duplicate {
        " (published before: nothing new)"
    } else {
        ""
    };
    println!(
        "event {} on `{}`: {} deliveries{again}",
        reply.event_id, args.topic, reply.deliveries
    );
    Ok(())
}

async fn list(data_dir: &DataDir, args: ListArgs) -> Result<()> {
    let deliveries = match args.remote.client()? {
        Some(client) => {
            client
                .deliveries(&args.tenant, args.state.as_deref(), args.limit)
                .await?
        }
        None => {
            let state = args
                .state
                .as_deref()
                .map(str::parse::<DeliveryState>)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let registry = data_dir.registry().await?;
            registry
                .list_deliveries(&args.tenant, state, args.limit)
                .await?
                .into_iter()
                .map(reply)
                .collect()
        }
    };
    if deliveries.is_empty() {
        println!("tenant `{}` has no such deliveries", args.tenant);
        return Ok(());
    }
    for d in deliveries {
        let last = match (d.last_status, &d.last_error) {
            (_, Some(error)) => format!(", last: {error}"),
            (Some(status), None) => format!(", last: {status}"),
            (None, None) => String::new(),
        };
        println!(
            "{}  {:<9} {} → {} POST {}  event {}  attempts {}{last}",
            d.id, d.state, d.topic, d.extension_id, d.path, d.event_key, d.attempts
        );
    }
    Ok(())
}

async fn retry(data_dir: &DataDir, args: RetryArgs) -> Result<()> {
    let delivery = match args.remote.client()? {
        Some(client) => client.retry_delivery(&args.tenant, &args.delivery).await?,
        None => {
            let registry = data_dir.registry().await?;
            reply(
                registry
                    .retry_delivery(&args.tenant, &args.delivery)
                    .await?,
            )
        }
    };
    println!(
        "delivery {} of event {} to {} is due now (attempts so far: {})",
        delivery.id, delivery.event_key, delivery.extension_id, delivery.attempts
    );
    Ok(())
}

fn reply(d: Delivery) -> DeliveryReply {
    DeliveryReply {
        id: d.id,
        event_key: d.event_key,
        topic: d.topic,
        extension_id: d.extension_id,
        path: d.path,
        state: d.state.as_str().to_owned(),
        attempts: d.attempts,
        last_status: d.last_status,
        last_error: d.last_error,
    }
}
