package duewatch.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;

import java.util.ArrayList;

import javax.enterprise.context.ApplicationScoped;
import javax.enterprise.inject.Produces;
import javax.inject.Singleton;

/**
 * The one CDI bean that Apicurio's config-index Quarkus extension would have contributed.
 *
 * That extension is excluded from the build because its build-time ("-deployment") artifact
 * is not on Maven Central. Apicurio's configuration service still injects the list of
 * settings that may be changed at run time; an empty list means none may be: the registry
 * runs with the static settings of application.properties and the command line, which is
 * all duewatch's development and tests need.
 */
@ApplicationScoped
public class DynamicConfigProducer {

    @Produces
    @Singleton
    public DynamicConfigPropertyList dynamicConfigPropertyList() {
        return new DynamicConfigPropertyList(new ArrayList<>());
    }
}
