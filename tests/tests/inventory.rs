//! The RDS inventory against moto: instances and Aurora clusters by ARN, endpoint
//! overrides, and the master credentials from the RDS-managed secret.

use std::collections::HashMap;

use dbroles_core::inventory::rds::RdsInventory;
use dbroles_core::inventory::{Inventory, InventoryError};
use dbroles_core::model::account::Access;
use dbroles_core::model::request::{ArnKind, InstanceArn};
use dbroles_tests::{aws_config, create_cluster, create_instance, create_writer, moto_endpoint, unique};
use secrecy::ExposeSecret;

fn arn(text: &str) -> InstanceArn {
    text.parse().unwrap()
}

#[tokio::test]
async fn instances_and_clusters_are_found_by_arn_with_their_master_credentials() {
    let config = aws_config(&moto_endpoint()).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let (instance_id, cluster_id, unmanaged_id) = (unique("pg-"), unique("aurora-"), unique("plain-"));

    let created = create_instance(&config, &instance_id, "postgres", "postgres")
        .manage_master_user_password(true)
        .db_name("orders")
        .tags(aws_sdk_rds::types::Tag::builder().key("team").value("payments").build())
        .send()
        .await
        .unwrap();
    let instance = created.db_instance.unwrap();
    let host = instance.endpoint.unwrap().address.unwrap();
    let secret_arn = instance.master_user_secret.unwrap().secret_arn.unwrap();
    secrets
        .put_secret_value()
        .secret_id(&secret_arn)
        .secret_string(r#"{"username": "postgres", "password": "real-Master-1"}"#)
        .send()
        .await
        .unwrap();
    let cluster = create_cluster(&config, &cluster_id, "aurora-mysql", "admin").await;
    create_instance(&config, &unmanaged_id, "mysql", "root").master_user_password("not-managed-1").send().await.unwrap();

    let overrides = HashMap::from([(host.clone(), "127.0.0.1:5432".to_string())]);
    let inventory = RdsInventory::new(&config, overrides);
    let home = Access::home("123456789012", "acme");

    let found =
        inventory.describe(&arn(&format!("arn:aws:rds:us-east-1:123456789012:db:{instance_id}")), &home).await.unwrap().unwrap();
    assert_eq!((found.kind, found.engine.as_str(), found.db_name.as_str()), (ArnKind::Db, "postgres", "orders"));
    assert_eq!((found.host.as_str(), found.port), ("127.0.0.1", 5432), "the override applies");
    assert_eq!(found.tags.iter().find(|t| t.key == "team").map(|t| t.value.as_str()), Some("payments"));
    let master = inventory.master_credentials(&found).await.unwrap();
    assert_eq!((master.user.as_str(), master.password.expose_secret()), ("postgres", "real-Master-1"));

    let cluster_arn = cluster.db_cluster_arn.unwrap();
    let found = inventory.describe(&arn(&cluster_arn), &home).await.unwrap().unwrap();
    assert_eq!((found.kind, found.engine.as_str()), (ArnKind::Cluster, "aurora-mysql"));
    assert_eq!(Some(found.host.as_str()), cluster.endpoint.as_deref(), "the writer endpoint");
    assert!(inventory.master_credentials(&found).await.is_ok());
    assert_eq!(found.server_arn(), cluster_arn);

    // An instance of the cluster is the same database server: it names the cluster.
    let member = create_writer(&config, &cluster_id, "aurora-mysql").await;
    let found = inventory.describe(&arn(member.db_instance_arn.as_deref().unwrap()), &home).await.unwrap().unwrap();
    assert_eq!(found.server_arn(), cluster_arn, "an Aurora instance is its cluster's server");

    let plain =
        inventory.describe(&arn(&format!("arn:aws:rds:us-east-1:123456789012:db:{unmanaged_id}")), &home).await.unwrap().unwrap();
    let missing = inventory.master_credentials(&plain).await.unwrap_err();
    assert!(matches!(missing, InventoryError::NoMasterSecret(_)));
    assert!(missing.to_string().contains("--manage-master-user-password"), "{missing}");

    assert!(inventory.describe(&arn("arn:aws:rds:us-east-1:123456789012:db:no-such-db"), &home).await.unwrap().is_none());
    assert!(inventory
        .describe(&arn("arn:aws:rds:us-east-1:123456789012:cluster:no-such-cluster"), &home)
        .await
        .unwrap()
        .is_none());
}
